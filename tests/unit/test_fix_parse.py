"""``commprof.fixes.catalog.parse``: the fix list of ``commprof try`` (docs/try.md).

Oracles from the spelling docs/try.md gives (``NAME``, ``NAME:ARG``, ``NAME=ARG``, comma-joined;
one DDP comm hook at most; a fix once) and from each fix's documented argument (``powersgd:R``,
R >= 1; ``local-sgd:K``, K >= 2; ``bucket-cap:MB``, MB > 0; ``reshard-after-forward=false``
only; the others take none).  Every refusal is a :class:`UsageError` (exit 2, one line)."""
from __future__ import annotations

import pytest

from commprof.errors import UsageError
from commprof.fixes.catalog import DEFAULT_WARMUP, FIXES, parse


def _named(fixes) -> list[tuple[str, str | None]]:
    return [(f.name, f.arg) for f in fixes]


@pytest.mark.parametrize("text, want", [
    ("bf16-compress", [("bf16-compress", None)]),
    ("bf16-compress,bucket-cap:25", [("bf16-compress", None), ("bucket-cap", "25")]),
    ("powersgd:2", [("powersgd", "2")]),
    ("powersgd", [("powersgd", None)]),  # R defaults (1)
    ("local-sgd=8", [("local-sgd", "8")]),  # '=' separates as ':' does
    ("reshard-after-forward=false", [("reshard-after-forward", "false")]),
    (" PowerSGD : 4 ,  Static-Graph ", [("powersgd", "4"), ("static-graph", None)]),  # case, spaces
    ("bf16-compress,,", [("bf16-compress", None)]),  # empty parts are no fix
    ("bf16-reduce,reshard-after-forward=false", [("bf16-reduce", None), ("reshard-after-forward", "false")]),
    ("grad-as-bucket-view,static-graph,bucket-cap:0.5",
     [("grad-as-bucket-view", None), ("static-graph", None), ("bucket-cap", "0.5")]),
])
def test_spellings(text, want):
    assert _named(parse(text)) == want


def test_order_is_kept_and_each_is_its_class():
    fixes = parse("local-sgd:4,grad-as-bucket-view,bucket-cap:25")
    assert [type(f) for f in fixes] == [FIXES["local-sgd"], FIXES["grad-as-bucket-view"], FIXES["bucket-cap"]]


def test_the_warmup_reaches_every_fix():
    assert {f.warmup for f in parse("local-sgd:4,bucket-cap:25")} == {DEFAULT_WARMUP}
    assert {f.warmup for f in parse("powersgd:2,static-graph", warmup=9)} == {9}


def test_spec_spells_the_fix_back():
    """A fix's ``spec`` parses to the same fix (try prints it, and a search re-runs it)."""
    for text in ("bf16-compress", "powersgd:3", "local-sgd:8", "bucket-cap:25", "reshard-after-forward=false",
                 "bf16-reduce", "static-graph", "grad-as-bucket-view", "fp16-compress"):
        (fix,) = parse(text)
        assert fix.spec == text
        assert _named(parse(fix.spec)) == _named([fix])


def test_every_fix_of_the_catalog_is_reachable_by_name():
    args = {"bucket-cap": "25", "reshard-after-forward": "false"}  # the two that need one
    for name in FIXES:
        spelled = name + (f"{'=' if name == 'reshard-after-forward' else ':'}{args[name]}" if name in args else "")
        assert [f.name for f in parse(spelled)] == [name]


def _refused(text: str) -> str:
    with pytest.raises(UsageError) as exc:
        parse(text)
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_no_fix_given(text):
    assert "no fix given" in _refused(text)


def test_an_unknown_fix_is_named_with_the_known_ones():
    message = _refused("bf16-compress,fp8-compress:2")
    assert "'fp8-compress:2'" in message
    assert all(name in message for name in FIXES)


@pytest.mark.parametrize("text", ["bf16-compress,powersgd:2", "fp16-compress,local-sgd:4",
                                  "powersgd,bf16-compress,bucket-cap:10"])
def test_two_comm_hooks_are_refused(text):
    """DDP takes one comm hook: compression, PowerSGD and local SGD each register one."""
    message = _refused(text)
    assert "comm hook" in message and "DDP takes one" in message


@pytest.mark.parametrize("text", ["bucket-cap:25,bucket-cap:50", "static-graph,static-graph",
                                  "bf16-reduce,bf16-reduce"])
def test_a_fix_given_twice_is_refused(text):
    assert "given twice" in _refused(text)


@pytest.mark.parametrize("text, says", [
    ("powersgd:0", ">= 1"), ("powersgd:-3", ">= 1"), ("powersgd:x", "integer"), ("powersgd:1.5", "integer"),
    ("local-sgd:1", ">= 2"), ("local-sgd:four", "integer"),
    ("bucket-cap", "bucket-cap:MB"), ("bucket-cap:0", "positive"), ("bucket-cap:-1", "positive"),
    ("bucket-cap:lots", "positive"),
    ("static-graph:3", "takes no argument"), ("bf16-compress:2", "takes no argument"),
    ("grad-as-bucket-view=true", "takes no argument"), ("bf16-reduce:1", "takes no argument"),
    ("reshard-after-forward", "=false"), ("reshard-after-forward=true", "=false"),
])
def test_bad_arguments_name_the_fix(text, says):
    message = _refused(text)
    assert says in message
    assert text.partition(":")[0].partition("=")[0] in message
