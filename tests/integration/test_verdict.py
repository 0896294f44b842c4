"""One verdict everywhere: level and words identical in the terminal, HTML, JSON and the
``commprof run`` closing line, at exposed fractions on each side of the levels."""
from __future__ import annotations

import html as html_lib
import json

import pytest

from commprof.analysis.outcome.verdict import LEVELS, assess
from commprof.cli.run import _one_line_summary
from runner import commprof
from synthetic import periodic_rank, write_run


@pytest.mark.parametrize("exposed, level", [(0.04, "not_bound"), (0.07, "partly_bound"),
                                             (0.15, "partly_bound"), (0.25, "bound")])
def test_same_level_and_words_in_every_output(tmp_path, exposed, level):
    # 100 ms steps, one collective in flight 50..80 ms; exposed = the 2 ms host call + the wait
    wait_ms = round(exposed * 100) - 2
    run = write_run(tmp_path / "run", [periodic_rank(r, steps=6, wait_ms=(80 - wait_ms, 80))
                                       for r in (0, 1)])
    doc = json.loads(commprof("report", str(run), "-f", "json", "--warmup", "2").stdout)
    a = doc["assessment"]
    assert a["exposed_fraction"] == pytest.approx(exposed)
    assert a["level"] == level
    label = next(lb for _, lv, lb, _ in LEVELS if lv == level)
    assert a["label"] == label and label in doc["verdict"]
    assert a["speedup_if_hidden"] == pytest.approx(1 / (1 - exposed))
    text = commprof("report", str(run), "--width", "400").stdout
    assert text.rstrip().splitlines()[-1].strip() == doc["verdict"]
    page = tmp_path / "r.html"
    commprof("report", str(run), "-o", str(page))
    body = page.read_text()
    assert html_lib.escape(doc["verdict"]) in body and f"— {label}</h1>" in body
    assert _one_line_summary(run) == doc["verdict"]  # the closing line of `commprof run`


def test_levels_are_ordered_and_no_communication_is_its_own_level():
    bounds = [b for b, *_ in LEVELS]
    assert bounds == sorted(bounds)
    assert assess({"comm_fraction": 0.0, "exposed_comm_fraction": 0.0}).level == "none"
    v = assess({"comm_fraction": 0.5, "exposed_comm_fraction": 0.2})
    assert v.level == "bound" and v.speedup_bound == pytest.approx(2.0)
