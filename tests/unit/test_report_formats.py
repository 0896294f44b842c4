"""Which format ``commprof report`` picks, and how exporters are told from renderers (by the
table they are in, not by their attributes)."""
from __future__ import annotations

import pytest

from commprof.errors import UsageError
from commprof.report.renderers import choose, exporters, formats, is_exporter, renderers


@pytest.mark.parametrize("fmt, output, name", [
    (None, None, "terminal"), ("json", None, "json"), (None, "r.json", "json"),
    (None, "r.html", "html"), (None, "run.trace.json", "trace"), ("trace", None, "trace"),
])
def test_choose_by_name_then_suffix_then_terminal(fmt, output, name):
    assert choose(fmt, output).name == name


def test_exporters_are_the_exporters_table_and_only_it():
    assert set(formats()) == set(renderers()) | set(exporters())
    assert not set(renderers()) & set(exporters())
    for name, f in formats().items():
        assert is_exporter(f) == (name in exporters())
    trace = exporters()["trace"]
    assert not hasattr(trace, "render")  # an exporter renders a run, never a document
    assert all(hasattr(r, "render") for r in renderers().values())


def test_unknown_formats_name_the_choices():
    with pytest.raises(UsageError, match="terminal, json, html, trace"):
        choose("pdf", None)
    with pytest.raises(UsageError, match="cannot infer"):
        choose(None, "r.pdf")
