"""commprof's exceptions.  The CLI turns them into one stderr line and an exit code, in one place."""
from __future__ import annotations

import os


class CommprofError(Exception):
    """Base of every error commprof reports to the user."""

    exit_code = 2


class UsageError(CommprofError):
    """Bad command-line input."""


class RunDirError(CommprofError):
    """A run directory is missing or unusable."""


class CaptureFormatError(CommprofError):
    """A capture or manifest file cannot be parsed."""

    def __init__(self, path: str | os.PathLike, offset: int, reason: str):
        self.path, self.offset, self.reason = str(path), offset, reason
        super().__init__(f"{path}: {reason}" + (f" (at byte {offset})" if offset else ""))


class TruncatedCaptureError(CaptureFormatError):
    """A capture file that ends before its header does: its process died while creating it."""


class ReportFileError(CommprofError):
    """A saved report document (JSON) is unreadable or not shaped like one."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class TraceFileError(CommprofError):
    """A PyTorch-profiler (Kineto) trace that cannot be read or used: the message is one line."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), " ".join(str(reason).split())
        super().__init__(f"{path}: {self.reason}")
