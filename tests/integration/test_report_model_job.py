"""A real demo job's report document against the typed model and its JSON Schema (the synthetic
documents: tests/unit/test_report_model.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from commprof.report import model

from runner import commprof, report_json, torchrun
from test_report_model import _extra_paths, _validator

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_real_demo_run_validates(tmp_path):
    demo = ROOT / "commprof" / "examples" / "demo_train.py"
    run = tmp_path / "demo"
    proc = commprof("run", "-q", "--out", str(run), "--", *torchrun(demo, "--steps", "6"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = report_json(run)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(doc)]
    assert not errors, errors[:5]
    assert model.Report.from_dict(doc).to_dict() == doc
    assert not sorted(set(_extra_paths(model.Report.from_dict(doc))))
