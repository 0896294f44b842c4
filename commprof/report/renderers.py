"""Renderers: small classes that turn a report document into text.  Chosen by name or suffix."""
from __future__ import annotations

import json
from typing import Protocol

from commprof.errors import UsageError


class Renderer(Protocol):
    """Formats a ``commprof.report/1`` document."""

    name: str
    suffixes: tuple[str, ...]

    def render(self, doc: dict, *, color: bool = False, width: int | None = None) -> str: ...


class JsonRenderer:
    """The document itself, as JSON."""

    name = "json"
    suffixes = (".json",)

    def render(self, doc: dict, *, color: bool = False, width: int | None = None) -> str:
        return json.dumps(doc, indent=2, sort_keys=False, allow_nan=False) + "\n"


def renderers() -> dict[str, Renderer]:
    """Renderers of the report document (terminal, json, html)."""
    from commprof.report.html import HtmlRenderer
    from commprof.report.terminal import TerminalRenderer
    return {r.name: r for r in (TerminalRenderer(), JsonRenderer(), HtmlRenderer())}


def exporters() -> dict:
    """Formats built from the run's records rather than the document (``render_run(run_dir)``)."""
    from commprof.report.trace import TraceRenderer
    return {r.name: r for r in (TraceRenderer(),)}


def choose(fmt: str | None, output: str | None) -> Renderer:
    """The renderer named by ``fmt``, else inferred from ``output``'s suffix, else the terminal."""
    table = {**renderers(), **exporters()}
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
