"""A real demo job's report document against the typed model and its JSON Schema (the synthetic
documents: tests/unit/test_report_model.py).  The job is the session's shared demo run
(tests/demo_run.py): this test only reads it."""
from __future__ import annotations

import pytest

from commprof.analysis.result import model

from demo_run import demo_run, shared_report
from test_report_model import _extra_paths, _validator


@pytest.mark.slow
def test_a_real_demo_run_validates(tmp_path_factory):
    doc = shared_report(demo_run(tmp_path_factory))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(doc)]
    assert not errors, errors[:5]
    assert model.Report.from_dict(doc).to_dict() == doc
    assert not sorted(set(_extra_paths(model.Report.from_dict(doc))))
