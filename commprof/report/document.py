"""A saved report document (``commprof.report/1``, docs/report-schema.md) read back into the typed
:class:`~commprof.analysis.result.model.Report` every renderer formats.  A run's or traces' report
is assembled by :func:`commprof.analysis.outcome.assemble.assemble`; both give the same class.
"""
from __future__ import annotations

import os

from commprof.analysis.result.model import SCHEMA, Report
from commprof.errors import ReportFileError
from commprof.format import safe_io

__all__ = ["SCHEMA", "load"]


def load(path: str | os.PathLike) -> Report:
    """A report document saved as JSON (``commprof report -o r.json``), parsed key by key into the
    typed :class:`~commprof.analysis.result.model.Report` that renderers read (the same class
    :func:`commprof.analysis.outcome.assemble.assemble` returns for a run).

    Raises :class:`~commprof.errors.ReportFileError` naming the file and the first bad key.
    """
    try:
        doc = safe_io.read_json(path, error=ReportFileError)
    except FileNotFoundError as exc:
        raise ReportFileError(path, "no such file") from exc
    if not isinstance(doc, dict):
        raise ReportFileError(path, f"expected a JSON object, got {type(doc).__name__ if not isinstance(doc, list) else 'a list'}")
    schema = doc.get("schema")
    if not isinstance(schema, str) or not schema.startswith("commprof.report/"):
        raise ReportFileError(path, f"not a commprof report (schema {schema!r}, expected {SCHEMA!r})")
    if schema != SCHEMA:
        raise ReportFileError(path, f"report schema {schema!r} is not {SCHEMA!r} "
                                    "(written by another commprof version)")
    return Report.from_dict(doc, path)  # every key, recursively
