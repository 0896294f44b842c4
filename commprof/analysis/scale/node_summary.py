"""Aggregate where the data is: each node's ``commprof run`` reduces its own processes' captures at
job end into ``RUN/summaries/<host>.p<pid>.cpsum`` (:mod:`commprof.analysis.scale.summary_file`), and
the report takes a file's reduction from there instead of reading the capture again
(:func:`reduce_run`: each file from its node summary, else reduced).

A summary stands for a capture only while that capture is unchanged: it records each file's name,
size, modification time and SHA-256, and a capture that differs (still growing, rewritten,
restored from elsewhere, edited with its size and time kept) is reduced from the capture itself.
A summary is used only when it is authentic: it carries an HMAC-SHA256 of its whole content under
the run's secret key (``RUN/summaries/summary.key``, 0600, made by the first ``commprof run`` that
writes one), so a summary re-encoded by anyone who cannot read that key (forged op counts, another
run's summary) is refused with a note and its captures are read instead.  A damaged or unreadable summary is a note, never an
error: its captures are read instead.  The summaries hold the cross-rank matching columns too
(28 bytes per call), so a report of a summarized run reads no capture at all.
"""
from __future__ import annotations

import functools
import hashlib
import os
import secrets
import socket
import stat
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from commprof.analysis.host.load import Run, RunSource
from commprof.analysis.host.rank import RankResult
from commprof.analysis.scale import reduce, summary_file
from commprof.errors import CaptureFormatError
from commprof.format import layout, reader, safe_io


@dataclass
class Written:
    """What :func:`write_node_summary` did (for the line ``commprof run`` prints)."""

    path: Path | None
    files: int
    bytes: int
    seconds: float
    paths: list[Path] = field(default_factory=list)  # the captures reduced
    results: list[RankResult] = field(default_factory=list)  # their reductions, in that order


@functools.lru_cache(maxsize=1)
def reduction_id() -> str:
    """A digest of the code a reduction depends on (commprof's analysis and format modules): a
    summary written by other code is not used, whatever the version number says."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent.parent  # commprof/
    for sub in ("analysis", "format"):
        for f in sorted((root / sub).rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _digest(path: Path) -> str:
    """SHA-256 of a capture file (what a summary is checked against; ~1-2 GB/s, docs/scaling.md)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


KEY_BYTES = 32


def summary_key(run_dir: Path, create: bool = False) -> bytes | None:
    """The run's secret key for its summaries (``RUN/summaries/summary.key``); with ``create``,
    made when absent (a complete temporary file linked into place: never half a key, and the first
    of several ``--join`` processes wins).  None where it is absent, unreadable or not a key."""
    path = layout.summary_key_path(run_dir)
    if create and not os.path.lexists(path):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        # 0600, or 0640 with --share-group: the group reads (and so checks) summaries, writes none
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     layout.file_mode(path.parent))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(KEY_BYTES))
            os.link(tmp, path)
        except FileExistsError:  # another node's commprof run made it first: use that one
            pass
        finally:
            tmp.unlink(missing_ok=True)
    try:  # never through a link, never a FIFO or a device
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        key = fh.read(KEY_BYTES + 1)
    return key if len(key) == KEY_BYTES else None


def node_captures(run_dir: Path, host: str) -> list[Path]:
    """The captures in ``run_dir`` that processes on ``host`` wrote and no live process is still
    writing (another job's ``commprof run --join`` on this host may not have finished: its files
    are left to its own summary, or to the report)."""
    import psutil
    mine = []
    for p in layout.capture_paths(run_dir):
        try:
            h = reader.read_header(p)
        except CaptureFormatError:
            continue  # a torn header: the report says so when it reads the file
        if h.get("host") == host and not psutil.pid_exists(int(h.get("pid", -1))):
            mine.append(p)
    return mine


def write_node_summary(run_dir: str | os.PathLike, host: str | None = None,
                       pid: int | None = None, jobs: int | None = None,
                       paths: list[Path] | None = None) -> Written:
    """Reduce this node's captures of ``run_dir`` (``paths``, default :func:`node_captures`) and
    write their summary (atomically).

    ``jobs``: processes for the reduction (default: one per core; the job has ended)."""
    run_dir = Path(run_dir)
    host = host or socket.gethostname()
    t0 = time.perf_counter()
    paths = node_captures(run_dir, host) if paths is None else paths
    if not paths:
        return Written(None, 0, 0, time.perf_counter() - t0)
    # before reading: a file that grows after is then stale
    stamps = [dict(_stamp(p), sha256=_digest(p)) for p in paths]
    results = list(reduce.reduce_paths(paths, jobs))
    out_dir = layout.summaries_dir(run_dir)
    out_dir.mkdir(mode=layout.dir_mode(run_dir), exist_ok=True)
    key = summary_key(run_dir, create=True)
    data = summary_file.encode(results, {"host": host, "files": stamps, "reduction": reduction_id()},
                               key=key)
    out = out_dir / layout.summary_name(host, pid or os.getpid())
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(8)}.tmp")  # O_EXCL: never through a link
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, layout.file_mode(out_dir))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Written(out, len(paths), len(data), time.perf_counter() - t0, paths, results)


class SummaryIndex:
    """Which captures of a run the node summaries stand for, decoded lazily: a summary is read
    when the first of its captures is needed and dropped when the last one has been taken, so
    memory holds about one node's reductions at a time (captures are taken in file order, which
    is node by node when ranks are numbered by node, as torchrun does)."""

    def __init__(self, dirs: list[Path], paths: list[Path]):
        by_name: dict[str, Path] = {}
        for p in paths:
            by_name.setdefault(p.name, p)
        self.notes: list[str] = []
        self._where: dict[Path, tuple[Path, int]] = {}  # capture -> (summary, position in it)
        self._left: dict[Path, int] = {}  # summary -> captures not yet taken
        self._open: dict[Path, list] = {}
        self._keys: dict[Path, bytes] = {}  # summary -> the key it was authenticated with
        for d in dirs:
            for sp in layout.summary_paths(d):
                self._index(sp, by_name)

    def _index(self, sp: Path, by_name: dict[str, Path]) -> None:
        key = summary_key(sp.parent.parent)
        try:
            data = safe_io.read_bytes(sp, within=sp.parent.parent)
            meta, _ = summary_file.decode(data, sp, meta_only=True)
            authentic = key is not None and summary_file.authentic(data, key, sp)
        except (OSError, CaptureFormatError) as exc:
            self.notes.append(f"{sp.name}: {getattr(exc, 'reason', None) or exc}; its captures "
                              "were read instead")
            return
        if meta.get("reduction") != reduction_id():
            self.notes.append(f"{sp.name}: written by another version of commprof's analysis; its "
                              "captures were read instead")
            return
        if not authentic:
            why = ("the run's summary key is missing or unreadable" if key is None else
                   "its MAC does not match the run's summary key: it was changed or forged")
            self.notes.append(f"{sp.name}: not authenticated ({why}); its captures were read "
                              "instead")
            return
        self._keys[sp] = key
        stale, files = 0, meta.get("files")
        if not (isinstance(files, list) and all(isinstance(f, dict) for f in files)):
            self.notes.append(f"{sp.name}: its list of captures is malformed; its captures were "
                              "read instead")
            return
        for i, stamp in enumerate(files):
            path = by_name.get(stamp.get("name"))
            if path is None or path in self._where:
                continue  # an earlier attempt's capture, or one another summary covered
            try:
                same = (_stamp(path) == {k: stamp.get(k) for k in ("name", "size", "mtime_ns")}
                        and _digest(path) == stamp.get("sha256"))
            except OSError:
                same = False
            if same:
                self._where[path] = (sp, i)
                self._left[sp] = self._left.get(sp, 0) + 1
            else:
                stale += 1
        if stale:
            self.notes.append(f"{sp.name}: {stale} capture(s) changed after the summary was "
                              "written; they were read again")

    def __contains__(self, path: Path) -> bool:
        return path in self._where

    def take(self, path: Path) -> RankResult | None:
        """The reduction of ``path`` from its summary (None: read the capture; a note says why)."""
        sp, i = self._where.pop(path)
        if sp not in self._open:
            try:
                data = safe_io.read_bytes(sp, within=sp.parent.parent)
                if not summary_file.authentic(data, self._keys[sp], sp):
                    raise CaptureFormatError(sp, 0, "changed since it was authenticated")
                self._open[sp] = summary_file.decode(data, sp)[1]
            except (OSError, CaptureFormatError) as exc:  # changed since it was indexed
                self.notes.append(f"{sp.name}: {getattr(exc, 'reason', None) or exc}; its "
                                  "captures were read instead")
                self._open[sp] = []
        results = self._open[sp]
        result = results[i] if i < len(results) else None
        if result is not None:
            results[i] = None
        self._left[sp] -= 1
        if not self._left[sp]:
            del self._open[sp]
        return result


def reduce_run(src: Run | RunSource, jobs: int | None = None, executor: Executor | None = None,
               progress: Callable[[int, int], None] | None = None,
               node_summaries: bool = True) -> Iterator[RankResult]:
    """Every process of the run reduced, in file order (damage notes go to ``src.notes``).

    A capture that a node summary stands for (``commprof run`` wrote one at job end; the module's
    docstring) is taken from it unless ``node_summaries`` is False; the others go to
    :func:`~commprof.analysis.scale.reduce.reduce_paths`.  ``progress(done, total)`` is called
    after each file.
    """
    if isinstance(src, Run):  # already in memory: nothing to read
        for rd in src.iter_ranks():
            yield reduce.reduce_data(rd)
        return
    paths = list(src.paths)
    index = None
    if node_summaries:
        index = SummaryIndex(src.dirs or [src.path], paths)
    raw = reduce.reduce_paths([p for p in paths if index is None or p not in index], jobs, executor)
    try:
        for done, path in enumerate(paths, 1):
            if index is not None and path in index:
                result = index.take(path) or reduce.reduce_file(path)  # None: the summary failed to read
            else:
                result = next(raw)
            if result.note:
                src.notes.append(result.note)
            if progress:
                progress(done, len(paths))
            yield result
    finally:
        raw.close()  # shuts a pool down
        if index is not None:
            src.notes.extend(n for n in index.notes if n not in src.notes)
