"""Gate rules: syntax, configuration files, evaluation.

Metrics (``METRICS``): the KPI registry's gate metrics (``commprof/analysis/measures/kpi_registry.py``:
names, units, directions; the "gate" column of docs/kpis.md's table), plus ``busbw:OP[:SIZE+]``
(GB/s, higher is better: calls of OP with mean S >= SIZE, from ``op_sizes``).  Values are the
report's KPIs, one number per KPI; the spread for confidence intervals is a bootstrap over
measured steps of the same statistic (gate/measure.py).

Rules: limits (``--max-comm-fraction 0.3``, ``--max-exposed-comm-fraction``,
``--max-bytes-per-step 1.2GB``, ``--max-step-time 250ms``, ``--min-busbw all_reduce:1MB+=10GB/s``,
generic ``--max METRIC=VALUE`` / ``--min METRIC=VALUE``) and regressions against a baseline
(``--max-regression exposed_comm_fraction=+5pp``, ``step_time=+10%``, ``bytes_per_step=+100MB``).
Times and sizes always carry their unit (``250ms``, ``1.2GB``): a bare ``250`` is refused rather
than read as seconds or bytes; fractions may be bare (``0.2``, ``20%``).  A regression fails only when the whole confidence interval of the change (bootstrap over steps)
lies beyond the allowed amount, so differences inside the runs' own noise never fail a gate.
"""
from __future__ import annotations

import json
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from commprof.analysis.measures import kpi_registry as registry
from commprof.errors import UsageError
from commprof.format.units import fmt_bytes, fmt_seconds
from commprof.gate import stats
from commprof.gate.measure import BUSBW_METRIC, Measurements, metric_value, size_in_rule

# name -> (unit, lower is better): the KPI registry's gate metrics (analysis/measures/kpi_registry.py)
METRICS = {g.name: (g.unit, g.better == "lower") for g in registry.gate_metrics()}


def metric_info(name: str) -> tuple[str, bool]:
    """(unit, lower is better) of a metric name; raises UsageError for an unknown one."""
    if name in METRICS:
        return METRICS[name]
    m = BUSBW_METRIC.match(name)
    if m:
        if m.group(2):
            size_in_rule(m.group(2), name)
        return "GB/s", False
    raise UsageError(f"unknown metric {name!r}; known: {', '.join(METRICS)}, busbw:OP[:SIZE+]")


# -- values --------------------------------------------------------------------------------------

# Times and sizes need their unit: a bare ``250`` is neither seconds nor bytes by default.
UNIT_NAMES = {"s": "ms, s, us", "ms": "ms, s, us", "B": "B, kB, MB, GB, KiB, MiB, GiB"}
_BARE_NUMBER = re.compile(r"^[+-]?[0-9.]+$")


def parse_value(text: str, unit: str, rule: str, alternatives: str = "") -> float:
    """A limit in the metric's unit: ``0.3``/``30%`` (fractions), ``1.2GB`` (bytes), ``250ms``,
    ``10GB/s``/``80Gbit/s`` (bandwidth, returned in GB/s).  Times and sizes without a unit are
    refused (``alternatives``: other accepted forms, named in that message)."""
    t = str(text).strip()
    if unit in UNIT_NAMES and _BARE_NUMBER.match(t):
        raise UsageError(f"{rule}: give a unit ({UNIT_NAMES[unit]}){alternatives}")
    try:
        if unit == "frac":
            v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
            if not 0 <= v <= 1:
                raise ValueError
            return v
        if unit == "B":
            return size_in_rule(t, rule)
        if unit in ("s", "ms"):  # a KPI in ms: the limit in ms too
            for suffix, scale in (("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("s", 1.0)):
                if t.endswith(suffix):
                    return float(t[: -len(suffix)]) * scale * (1e3 if unit == "ms" else 1.0)
            return float(t)
        if unit == "GB/s":
            for suffix, scale in (("GB/s", 1.0), ("MB/s", 1e-3), ("Gbit/s", 1 / 8), ("Mbit/s", 1e-3 / 8)):
                if t.endswith(suffix):
                    return float(t[: -len(suffix)]) * scale
            return float(t)
    except ValueError:
        pass
    examples = {"frac": "0.3 or 30%", "B": "1.2GB", "s": "250ms", "ms": "250ms", "GB/s": "10GB/s"}[unit]
    raise UsageError(f"{rule}: {text!r} is not a value in {unit} (e.g. {examples})")


# -- rules ---------------------------------------------------------------------------------------

@dataclass
class Rule:
    text: str  # as the user wrote it (for messages)
    metric: str
    kind: str  # "max", "min" or "regression"
    limit: float  # limit in the metric's unit; for regressions the allowed worsening
    mode: str = ""  # regression: "pp", "%" or "abs"


@dataclass
class Result:
    rule: Rule
    status: str  # "pass" or "fail"
    measured: float | None
    baseline: float | None = None
    change: float | None = None  # regression: worsening (pp, % or unit), positive = worse
    ci: tuple[float, float] | None = None  # of the measured median / of the worsening
    message: str = ""  # one line: rule, measured value(s), limit
    detail: str = ""  # short: the change and its interval, for tables


def parse_limit(kind: str, spec: str, flag: str, text: str | None = None) -> Rule:
    """``--max METRIC=VALUE`` / ``--min METRIC=VALUE`` (``text``: how messages name the rule)."""
    text = text or f"{flag} {spec}"
    if "=" not in spec:
        raise UsageError(f"{text}: use METRIC=VALUE")
    metric, value = spec.split("=", 1)
    unit, _ = metric_info(metric.strip())
    return Rule(text, metric.strip(), kind, parse_value(value, unit, text))


def parse_min_busbw(spec: str, text: str | None = None) -> Rule:
    """``all_reduce:1MB+=10GB/s`` -> busbw:all_reduce:1MB+ >= 10 GB/s."""
    text = text or f"--min-busbw {spec}"
    if "=" not in spec:
        raise UsageError(f"{text}: use OP[:SIZE+]=RATE, e.g. all_reduce:1MB+=10GB/s")
    where, value = spec.rsplit("=", 1)
    return parse_limit("min", f"busbw:{where.strip()}={value}", "--min-busbw", text)


_REGRESSION = re.compile(r"^\s*([a-z_:.0-9A-Z+]+?)\s*=\s*([+-]?)\s*([0-9.]+)\s*(pp|%|[A-Za-zµ/]*)\s*$")


def parse_regression(spec: str, text: str | None = None) -> Rule:
    """``exposed_comm_fraction=+5pp``, ``step_time=+10%``, ``bytes_per_step=+100MB``,
    ``busbw=-10%`` (for higher-is-better metrics the sign may be omitted: a drop is the regression).
    An absolute time or size allowance needs its unit (``step_time=+20ms``, not ``+20``)."""
    m = _REGRESSION.match(spec)
    text = text or f"--max-regression {spec}"
    if not m:
        raise UsageError(f"{text}: use METRIC=+AMOUNT with pp, % or a unit, e.g. "
                         "exposed_comm_fraction=+5pp or step_time=+10%")
    metric, sign, number, suffix = m.groups()
    unit, lower_better = metric_info(metric)
    if (sign == "-" and lower_better) or (sign == "+" and not lower_better):
        raise UsageError(f"{text}: {metric} gets worse when it "
                         f"{'grows' if lower_better else 'drops'}; write the allowed worsening as "
                         f"{'+' if lower_better else '-'}{number}{suffix}")
    if suffix == "pp":
        if unit != "frac":
            raise UsageError(f"{text}: pp (percentage points) applies to fractions only")
        return Rule(text, metric, "regression", float(number) / 100, "pp")
    if suffix == "%":
        return Rule(text, metric, "regression", float(number) / 100, "%")
    return Rule(text, metric, "regression",
                parse_value(number + suffix, unit, text, " or a relative change (%)"), "abs")


# -- configuration ---------------------------------------------------------------------------

CONFIG_KEYS = {"baseline", "skip_steps", "confidence", "max_comm_fraction",
               "max_exposed_comm_fraction", "max_bytes_per_step", "max_step_time", "min_busbw",
               "max_regression", "max", "min"}


def find_config(start: Path | None = None) -> Path | None:
    """``commprof.toml`` (table ``[gate]``) or ``pyproject.toml`` with ``[tool.commprof.gate]``,
    in the working directory or the nearest parent that has one."""
    d = (start or Path.cwd()).resolve()
    for folder in (d, *d.parents):
        if (folder / "commprof.toml").is_file():
            return folder / "commprof.toml"
        py = folder / "pyproject.toml"
        if py.is_file() and _gate_table(py) is not None:
            return py
    return None


def _gate_table(path: Path) -> dict | None:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from exc
    if path.name == "pyproject.toml":
        return data.get("tool", {}).get("commprof", {}).get("gate")
    return data.get("gate", data)


def load_config(path: Path | None) -> tuple[dict, Path | None]:
    """The gate table of ``path`` (or of the file :func:`find_config` finds), checked."""
    path = path or find_config()
    if path is None:
        return {}, None
    table = _gate_table(Path(path)) or {}
    if not isinstance(table, dict):
        raise UsageError(f"{path}: the gate table must be a table")
    unknown = sorted(set(table) - CONFIG_KEYS)
    if unknown:
        raise UsageError(f"{path}: unknown gate key(s) {', '.join(unknown)}; known: "
                         + ", ".join(sorted(CONFIG_KEYS)))
    for key in ("min_busbw", "max_regression", "max", "min"):
        if key in table and isinstance(table[key], str):
            table[key] = [table[key]]
    build_rules(table, where=f"{path}")  # every value checked here, named as the file spells it
    return table, Path(path)


_LIST_KEYS = {"min_busbw", "max", "min", "max_regression"}


def build_rules(opts: dict, where: str | None = None) -> list[Rule]:
    """Rules from merged options (file values overridden by flags).  ``where``: the configuration
    file the options come from; messages then name its keys (``commprof.toml: max_step_time =
    250``) rather than the flags."""
    def text(key: str, value) -> str | None:
        if where is None:
            return None if key in _LIST_KEYS else f"--{key.replace('_', '-')} {value}"
        return f"{where}: {key} = {json.dumps(value, ensure_ascii=False)}"

    rules = []
    for key, metric in (("max_comm_fraction", "comm_fraction"),
                        ("max_exposed_comm_fraction", "exposed_comm_fraction"),
                        ("max_bytes_per_step", "bytes_per_step"), ("max_step_time", "step_time")):
        if opts.get(key) is not None:
            unit, _ = metric_info(metric)
            label = text(key, opts[key])
            rules.append(Rule(label, metric, "max", parse_value(str(opts[key]), unit, label)))
    for spec in opts.get("min_busbw") or []:
        rules.append(parse_min_busbw(spec, text("min_busbw", spec)))
    for spec in opts.get("max") or []:
        rules.append(parse_limit("max", spec, "--max", text("max", spec)))
    for spec in opts.get("min") or []:
        rules.append(parse_limit("min", spec, "--min", text("min", spec)))
    for spec in opts.get("max_regression") or []:
        rules.append(parse_regression(spec, text("max_regression", spec)))
    return rules


# -- evaluation --------------------------------------------------------------------------------

def evaluate(rule: Rule, cur: Measurements, base: Measurements | None,
             confidence: float = 0.95, runs: tuple[list, list] | None = None) -> Result:
    """One rule on ``cur`` (and ``base``: each side's runs merged).  ``runs``: (the current runs,
    the baseline runs); with three or more in all a regression's interval is the run-to-run one
    (gate/runs.py), else the bootstrap over steps."""
    unit, lower_better = metric_info(rule.metric)
    value, series = metric_value(cur, rule.metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        why = ("GPU timeline not measured: an NCCL run without GPU windows has no communication "
               "times" if cur.run.get("time_basis") == "host_launch" else "no steps, or no such calls")
        return Result(rule, "fail", None, message=f"{rule.text}: no {rule.metric} in {cur.source} "
                                                  f"({why}): cannot verify")
    if rule.kind in ("max", "min"):
        ok = value <= rule.limit if rule.kind == "max" else value >= rule.limit
        ci = stats.stat_ci(series, confidence)
        word = "<=" if rule.kind == "max" else ">="
        span = f"{confidence:.0%} CI {fmt(ci[0], unit)}..{fmt(ci[1], unit)}" if ci else "single value"
        msg = f"{rule.metric} = {fmt(value, unit)} (must be {word} {fmt(rule.limit, unit)}); {span}"
        return Result(rule, "pass" if ok else "fail", value, ci=ci, message=f"{rule.text}: {msg}",
                      detail=span)
    if base is None:
        raise UsageError(f"{rule.text}: needs --baseline (a run directory, report or baseline file)")
    bvalue, bseries = metric_value(base, rule.metric)
    if bvalue is None:
        return Result(rule, "fail", value, message=f"{rule.text}: no {rule.metric} in the baseline "
                                                   f"{base.source}: cannot compare")
    relative = rule.mode == "%"
    sign = 1 if lower_better else -1
    change = sign * ((value / bvalue - 1) if relative else (value - bvalue)) if not (
        relative and bvalue == 0) else math.inf
    ci, raw = None, None
    if runs is not None:
        from commprof.gate import runs as runs_mod  # (runs imports measure only: no circle)
        raw = runs_mod.runs_interval(runs_mod.run_values(runs[1], rule.metric),
                                     runs_mod.run_values(runs[0], rule.metric), relative, confidence)
    by_runs = raw is not None
    if raw is None and series is not None and bseries is not None:
        raw = stats.stat_diff_ci(bseries, series, relative, confidence)
    if raw is not None:
        ci = tuple(sorted((sign * raw[0], sign * raw[1])))
    lower = ci[0] if ci else change
    failed = lower > rule.limit
    noise = ci is not None and ci[0] <= 0 <= ci[1]
    shown = _fmt_change(change, rule.mode, unit)
    msg = (f"{rule.metric} {fmt(bvalue, unit)} -> {fmt(value, unit)} ({'worse' if change > 0 else 'better'} by "
           f"{shown.lstrip('+-')}; allowed {_fmt_change(rule.limit, rule.mode, unit)})")
    shown = f"worsening {shown}"
    if ci:
        span = (f"{_fmt_change(ci[0], rule.mode, unit)}..{_fmt_change(ci[1], rule.mode, unit)}"
                + (", within noise" if noise else ""))
        over = "run-to-run" if by_runs else "steps"
        msg += f"; {confidence:.0%} CI of the worsening ({over}) {span}"
        detail = f"{shown} ({confidence:.0%} CI, {over}: {span})"
    else:
        msg += "; no per-step spread for this metric: compared as single values"
        detail = f"{shown} (single values)"
    return Result(rule, "fail" if failed else "pass", value, bvalue, change, ci,
                  f"{rule.text}: {msg}", detail)


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "frac":
        return f"{v * 100:.2f}%"
    if unit == "B":
        return fmt_bytes(v)
    if unit == "s":
        return fmt_seconds(v)
    if unit == "ms":
        return fmt_seconds(v / 1e3)
    return f"{v:.4g} {unit}"


def _fmt_change(v: float, mode: str, unit: str) -> str:
    if mode == "pp":
        return f"{v * 100:+.2f}pp"
    if mode == "%":
        return f"{v * 100:+.1f}%"
    return ("+" if v >= 0 else "-") + fmt(abs(v), unit)


def confidence_value(v) -> float:
    c = float(v)
    if not 0.5 <= c < 1:
        raise UsageError(f"--confidence {v}: between 0.5 and 1 (e.g. 0.95)")
    return c


def env_summary_path() -> str | None:
    return os.environ.get("GITHUB_STEP_SUMMARY") or None
