"""Results of `commprof report --scheduler`/`--jobs` workers are data, never code (issue 26 item 3):
what a worker returns is decoded by the pickle-free summary codec, and a pickle (an object whose
``__reduce__`` has a side effect) is refused without being unpickled."""
from __future__ import annotations

import os
import pickle

import pytest

from commprof.analysis.scale import reduce as reduce_mod
from commprof.errors import CaptureFormatError


class _SideEffect:
    """Unpickling this creates ``marker`` (what a hostile worker's result would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickled_result_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps(_SideEffect(marker))
    with pytest.raises(CaptureFormatError, match="not a commprof summary"):
        reduce_mod.decode_results(data, ["rank00000.a0.p1.cpf"])
    assert not marker.exists()


def test_a_result_that_is_not_bytes_is_refused(tmp_path):
    with pytest.raises(CaptureFormatError, match="returned a _SideEffect"):
        reduce_mod.decode_results(_SideEffect(tmp_path / "x"), ["rank00000.a0.p1.cpf"])


class _ForgingExecutor:
    """An executor whose workers send back pickles instead of what reduce_files returns."""

    def __init__(self, marker):
        self.marker = marker

    def map(self, fn, batches):
        return [pickle.dumps(_SideEffect(self.marker)) for _ in batches]


def test_a_report_on_a_cluster_that_sends_pickles_stops_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    paths = [tmp_path / "rank00000.a0.p1.cpf"]
    with pytest.raises(CaptureFormatError):
        list(reduce_mod.reduce_paths(paths, executor=_ForgingExecutor(marker)))
    assert not marker.exists()


def test_another_files_reduction_is_refused():
    from commprof.analysis.scale import summary_file
    data = summary_file.encode([], {"files": []})
    with pytest.raises(CaptureFormatError, match="other files"):
        reduce_mod.decode_results(data, ["rank00000.a0.p1.cpf"])
