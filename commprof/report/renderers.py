"""Output formats of ``commprof report``, chosen by name or by the output file's suffix.

* a :class:`Renderer` turns the typed report into text (terminal, json, html) — a saved
  report (``report.json``) renders again;
* an :class:`Exporter` is built from the run directory itself, every record (the trace), so it
  needs the run, not a document.

:func:`formats` holds both tables; what a name belongs to is decided by membership in
:func:`exporters`, never by the object's attributes.
"""
from __future__ import annotations

import json
from typing import Protocol

from commprof.analysis.result.model import Report
from commprof.errors import UsageError


class Renderer(Protocol):
    """Formats a typed report (``commprof.report/1``, :class:`Report`)."""

    name: str
    suffixes: tuple[str, ...]

    def render(self, report: Report, *, color: bool = False, width: int | None = None) -> str: ...


class Exporter(Protocol):
    """Formats a run directory (or several directories of one run) from its records."""

    name: str
    suffixes: tuple[str, ...]

    def render_run(self, run_dir: str | list[str] | None) -> str: ...


class JsonRenderer:
    """The document itself, as JSON."""

    name = "json"
    suffixes = (".json",)

    def render(self, report: Report, *, color: bool = False, width: int | None = None) -> str:
        return json.dumps(report.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"


def renderers() -> dict[str, Renderer]:
    """Renderers of the report document (terminal, json, html)."""
    from commprof.report.html import HtmlRenderer
    from commprof.report.terminal import TerminalRenderer
    return {r.name: r for r in (TerminalRenderer(), JsonRenderer(), HtmlRenderer())}


def exporters() -> dict[str, Exporter]:
    """Formats built from the run's records rather than the document (``render_run(run_dir)``)."""
    from commprof.report.trace import TraceExporter
    return {r.name: r for r in (TraceExporter(),)}


def formats() -> dict[str, Renderer | Exporter]:
    """Every format by name: the renderers, then the exporters."""
    return {**renderers(), **exporters()}


def is_exporter(fmt: Renderer | Exporter) -> bool:
    """Whether ``fmt`` (from :func:`choose`) is built from the run's records."""
    return fmt.name in exporters()


def choose(fmt: str | None, output: str | None) -> Renderer | Exporter:
    """The format named by ``fmt``, else inferred from ``output``'s suffix, else the terminal."""
    table = formats()
    if fmt:
        if fmt not in table:
            raise UsageError(f"--format {fmt}: unknown format (choose from {', '.join(table)})")
        return table[fmt]
    if output:
        by_suffix = sorted(((s, r) for r in table.values() for s in r.suffixes),
                           key=lambda sr: -len(sr[0]))  # ".trace.json" before ".json"
        for suffix, r in by_suffix:
            if output.endswith(suffix):
                return r
        raise UsageError(f"-o {output}: cannot infer the format from the suffix; "
                         f"add --format ({', '.join(table)})")
    return table["terminal"]
