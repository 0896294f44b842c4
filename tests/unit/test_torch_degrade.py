"""A torch whose internals differ from what commprof expects degrades that part, visibly, and
never raises: each mismatch is faked here against the real torch of this process (its
dispatcher's c10d operators, ``distributed_c10d``'s code objects)."""
from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")

from commprof.capture import collectives  # noqa: E402
from commprof.capture.torch_objects import checked_blocking_api_codes  # noqa: E402


class Degrades:
    """The recorder's ``degrade`` (where -> message), nothing else."""

    def __init__(self):
        self.seen: dict[str, str] = {}

    def degrade(self, where: str, exc: BaseException) -> None:
        self.seen[where] = str(exc)


def test_this_torch_has_every_operator_commprof_knows_or_an_older_torch_lacks_it():
    rec = Degrades()
    specs, missing = collectives.discover_specs(torch, rec)
    assert rec.seen == {}, rec.seen  # the torch the suite runs on: nothing unknown, nothing bad
    assert missing == []  # what an older torch lacks is only what a newer one added
    assert {s.c10d_name for s in specs} | collectives.ADDED_LATER >= set(collectives.C10D_OPS)
    assert "allreduce_" in {s.c10d_name for s in specs}


def test_an_operator_commprof_does_not_know_is_named_as_not_captured():
    rec = Degrades()
    known = {k: v for k, v in collectives.C10D_OPS.items() if k != "broadcast_"}
    specs, _ = collectives.discover_specs(torch, rec, known)
    assert "broadcast_" not in {s.c10d_name for s in specs}
    assert "broadcast_" in rec.seen["ops.unknown"] and "not capture" in rec.seen["ops.unknown"]


def test_a_schema_commprof_cannot_read_degrades_that_operator_only():
    rec = Degrades()
    # check_for_nan(Tensor) has no process_group argument: the schema of a "changed" operator
    known = {"allreduce_": "all_reduce", "check_for_nan": "all_reduce"}
    specs, _ = collectives.discover_specs(torch, rec, known)
    assert [s.c10d_name for s in specs] == ["allreduce_"]
    assert "op.check_for_nan" in rec.seen and "not captured" in rec.seen["op.check_for_nan"]


def test_blocking_functions_found_by_their_code_objects():
    rec = Degrades()
    codes = checked_blocking_api_codes(torch, rec)
    assert rec.seen == {}
    from torch.distributed import distributed_c10d as c10d
    assert inspect.unwrap(c10d.broadcast).__code__ in codes


def test_a_distributed_c10d_whose_functions_moved_degrades_the_sync_wait_split(monkeypatch):
    from torch.distributed import distributed_c10d as c10d

    def all_reduce(tensor, *args, **kwargs):  # defined here: its code object is not c10d's
        return None

    monkeypatch.setattr(c10d, "all_reduce", all_reduce)
    rec = Degrades()
    checked_blocking_api_codes(torch, rec)
    assert "work.wait.sync" in rec.seen and "all_reduce not among them" in rec.seen["work.wait.sync"]
