"""``commprof try``: one side's runs as one measurement, and the compare table of two sides."""
from __future__ import annotations

import numpy as np


def merged(side):
    """One :class:`~commprof.gate.measure.Measurements` of every run of ``side``: their per-step
    series joined, the step KPIs of the joined steps."""
    from commprof.gate import measure
    ms = [measure.from_document(d, str(r), "run", "auto") for d, r in zip(side.docs, side.runs)]
    m = ms[0]
    if len(ms) > 1:
        m.series = {k: np.concatenate([x.series.get(k, np.zeros(0)) for x in ms]) for k in m.series}
        m.values.update(measure._step_values(m.series))
        m.source = f"{side.label} ({len(ms)} runs)"
    return m


def compare_table(base, side) -> str:
    """`commprof compare`'s table of the baseline side against a fix's side, judged against the
    run-to-run spread when each side has several runs."""
    from commprof.gate import measure, output, rules
    from commprof.gate.compare import compare
    from commprof.gate.runs import basis_text
    a, b = merged(base), merged(side)
    ra, rb = ([measure.from_document(d, str(r), "run", "auto") for d, r in zip(s.docs, s.runs)]
              for s in (base, side))
    return output.compare_text(compare(a, b, rules.confidence_value(0.95), ra, rb), a.source, b.source,
                               basis=basis_text(len(ra), len(rb)))
