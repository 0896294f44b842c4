"""Presentation of gate results and comparisons: rich table, JUnit XML, Markdown, JSON."""
from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from commprof.format.text import printable
from commprof.gate.rules import Result, fmt, metric_info


def _console(buf, color: bool, width: int | None) -> Console:
    return Console(file=buf, force_terminal=color, no_color=not color, width=width or 120,
                   highlight=False)


def gate_text(results: list[Result], header: list[str], color: bool = False,
              width: int | None = None) -> str:
    buf = io.StringIO()
    con = _console(buf, color, width)
    for line in header:
        con.print(Text(printable(line)))  # paths and sources: shown, never sent as escapes
    t = Table(box=box.SIMPLE_HEAD)
    for name in ("", "rule", "measured", "baseline", "limit / allowed", "change / interval"):
        t.add_column(name, no_wrap=name != "change / interval")
    for r in results:
        unit = _unit(r)
        mark = Text("PASS", style="green") if r.status == "pass" else Text("FAIL", style="bold red")
        limit = (fmt(r.rule.limit, unit) if r.rule.kind != "regression"
                 else {"pp": f"+{r.rule.limit * 100:.2f}pp", "%": f"+{r.rule.limit * 100:.1f}%"}.get(
                     r.rule.mode, fmt(r.rule.limit, unit)))
        t.add_row(mark, Text(printable(r.rule.text)), fmt(r.measured, unit), fmt(r.baseline, unit), limit,
                  Text(printable(r.detail)))
    con.print(t)
    failed = [r for r in results if r.status == "fail"]
    for r in failed:
        con.print(Text(f"FAIL {printable(r.message)}", style="red"))
    con.print(Text(f"{len(results) - len(failed)} of {len(results)} rule(s) passed",
                   style="bold green" if not failed else "bold red"))
    return buf.getvalue()


def _unit(r: Result) -> str:
    return metric_info(r.rule.metric)[0]


def gate_json(results: list[Result], info: dict) -> str:
    return json.dumps({"schema": "commprof.gate/1", **info, "passed": all(r.status == "pass" for r in results),
                       "rules": [{"rule": r.rule.text, "metric": r.rule.metric, "kind": r.rule.kind,
                                  "limit": r.rule.limit, "mode": r.rule.mode or None,
                                  "status": r.status, "measured": r.measured,
                                  "baseline": r.baseline, "change": r.change,
                                  "ci": list(r.ci) if r.ci else None, "message": r.message}
                                 for r in results]}, indent=1) + "\n"


def junit_xml(results: list[Result], suite: str = "commprof gate") -> str:
    """One ``<testcase>`` per rule, ``<failure message=…>`` on failed ones (JUnit common schema)."""
    failures = sum(r.status == "fail" for r in results)
    root = ET.Element("testsuites", name=suite, tests=str(len(results)), failures=str(failures))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(results)),
                       failures=str(failures), errors="0", skipped="0")
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname="commprof.gate", name=r.rule.text)
        if r.status == "fail":
            f = ET.SubElement(tc, "failure", message=r.message, type="GateFailure")
            f.text = r.message
        else:
            out = ET.SubElement(tc, "system-out")
            out.text = r.message
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def gate_markdown(results: list[Result], header: list[str]) -> str:
    failed = sum(r.status == "fail" for r in results)
    lines = [f"### commprof gate: {'❌ ' + str(failed) + ' rule(s) failed' if failed else '✅ passed'}",
             ""] + [f"- {_md_escape(h)}" for h in header] + [
        "", "| | rule | measured | baseline | detail |", "|---|---|---|---|---|"]
    for r in results:
        unit = _unit(r)
        lines.append(f"| {'✅' if r.status == 'pass' else '❌'} | `{_md_escape(r.rule.text)}` | "
                     f"{fmt(r.measured, unit)} | {fmt(r.baseline, unit)} | "
                     f"{_md_escape(r.message.split(': ', 1)[-1])} |")
    return "\n".join(lines) + "\n"


def _delta(row: dict) -> str:
    if row["delta"] is None:
        return "-"
    if row["unit"] == "frac":
        return f"{row['delta'] * 100:+.2f}pp"
    return f"{row['relative'] * 100:+.1f}%" if row["relative"] is not None else fmt(row["delta"], row["unit"])


def _spread(v, iqr, unit) -> str:
    return fmt(v, unit) + (f" [{fmt(iqr[0], unit)}..{fmt(iqr[1], unit)}]" if iqr else "")


def _runs_spread(r: dict) -> str:
    """Each side's run values, lowest..highest (several runs), else "-"."""
    parts = []
    for side in ("a", "b"):
        vals = r.get(f"{side}_runs") or []
        if len(vals) >= 2:
            parts.append(f"{side.upper()} {fmt(min(vals), r['unit'])}..{fmt(max(vals), r['unit'])}")
    return "; ".join(parts) or "-"


def compare_text(rows: list[dict], a: str, b: str, color: bool = False, width: int | None = None,
                 basis: str | None = None) -> str:
    """The comparison table; ``basis``: what the verdicts rest on (gate/runs.basis_text)."""
    buf = io.StringIO()
    con = _console(buf, color, width)
    a, b = printable(a), printable(b)
    t = Table(box=box.SIMPLE_HEAD, title=Text(f"A = {a}\nB = {b}\n(value [95% CI: bootstrap over measured steps])"
                                              + (f"\nverdicts: {printable(basis)}" if basis else "")),
              title_justify="left")
    several = any(len(r.get("a_runs") or []) > 1 or len(r.get("b_runs") or []) > 1 for r in rows)
    for name in ("KPI", "A", "B", "B vs A", "verdict") + (("runs (low..high)",) if several else ()):
        t.add_column(name, no_wrap=True)
    for r in rows:
        style = {"worse": "red", "better": "green"}.get(r["verdict"].split(" ")[0], "")
        cells = [r["metric"], _spread(r["a"], r["a_iqr"], r["unit"]),
                 _spread(r["b"], r["b_iqr"], r["unit"]), _delta(r), Text(r["verdict"], style=style)]
        t.add_row(*cells, *((_runs_spread(r),) if several else ()))
    con.print(t)
    return buf.getvalue()


def compare_markdown(rows: list[dict], a: str, b: str, basis: str | None = None) -> str:
    lines = [f"A = `{_md_escape(a)}`, B = `{_md_escape(b)}`", *([f"verdicts: {_md_escape(basis)}"] if basis else []),
             "", "| KPI | A | B | B vs A | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['metric']} | {_spread(r['a'], r['a_iqr'], r['unit'])} | "
                     f"{_spread(r['b'], r['b_iqr'], r['unit'])} | {_delta(r)} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def quality_line(d: dict, no_band: str = "one run per side") -> str:
    """A judgement's verdict (:func:`commprof.analysis.outcome.convergence.judge` and friends), e.g.
    "val_acc: 0.3 % worse (noise ±1.1 %): ok"; ``no_band``: why there is no band."""
    band = f"no noise band: {no_band}" if d["band"] is None else f"noise ±{d['band'] * 100:.1f} %"
    w = d["worse_by"]
    worse = "unknown" if w is None else f"{abs(w) * 100:.1f} % {'worse' if w > 0 else 'better'}"
    line = f"{d.get('metric') or 'loss'}: {worse} ({band}): {d['verdict']}"
    if d.get("diverged"):
        line += f" — {d['diverged']}"
    if d["verdict"] == "too short":
        need = d["short"]["steps_needed"]
        line += (f" — {d['short']['why']}; about {need} steps would do (--steps {need})" if need
                 else f" — {d['short']['why']}")
    return line


def time_to_target_line(t: dict, a: str = "the baseline", b: str | None = None) -> str:
    """The time to ``a``'s final loss on both sides and the effective speed-up
    (:func:`commprof.analysis.outcome.convergence.effective_speedup`; its target must be known)."""
    from commprof.format.units import fmt_seconds

    def secs(x):
        return "unknown (no step durations)" if x is None else fmt_seconds(x)
    after = (secs(t["time_s"]) if t["reached"] else
             f"not reached within {t.get('cap_steps') or 'its'} steps (its run, extrapolated)")
    if t["reached"] and t.get("extrapolated"):
        after += (f" (extrapolated: a fit of its curve beyond its run, at most {t['cap_steps']} steps, "
                  "twice the baseline's)")
    return (f"time to {a}'s final loss ({t['target']:.4g}, trailing mean of {t['window']} steps): "
            f"{secs(t['time_base_s'])} -> " + (f"{b} " if b else "") + after
            + (f": effective speed-up {t['speedup']:.2f}x" if t["speedup"] else ""))


def loss_lines(judgement: dict | None, a: str = "A", b: str = "B") -> list[str]:
    """The loss lines under a comparison: ``judgement`` from
    :func:`commprof.analysis.outcome.convergence.loss_judgement` (None: not recorded in both)."""
    if not judgement or judgement["worse_by"] is None:
        return ["loss: not recorded in both runs (commprof records it from backward(): see docs/try.md)"]
    runs = f"{judgement['baseline_runs']} vs {judgement['runs']} run(s)"
    out = [f"{b} vs {a}, " + quality_line(judgement, "one run per side (give several: --baseline A1 "
                                                       "--baseline A2 B1 B2)"),
           f"judged on: the mean training loss over the last quarter of the measured steps ({runs})"]
    t = judgement["time_to_target"]
    if t["target"] is not None:
        out.append(time_to_target_line(t, a, b))
    return out
