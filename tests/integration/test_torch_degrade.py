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


# -- the Flight Recorder's dump (capture/flight_recorder.py) ------------------------------------

REAL_DUMP = """
import os, sys, torch, torch.distributed as dist
os.environ.update(TORCH_FR_BUFFER_SIZE="64")
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
for _ in range(3):
    dist.all_reduce(torch.ones(2))
from commprof.capture.flight_recorder import dump_function
sys.stdout.buffer.write(dump_function(torch)(True, False))
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def real_dump() -> dict:
    """This torch's own Flight Recorder dump of three gloo all_reduces (a fresh process: the
    ring's size is read once per process)."""
    import json
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", REAL_DUMP], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)


class FrRec(Degrades):
    def __init__(self):
        super().__init__()
        self.json = []
        self.closing = True


def _drain(doc, dump=None):
    import json
    from commprof.capture.flight_recorder import Drain
    rec = FrRec()
    drain = Drain(rec, torch, dump=dump or (lambda a, b: json.dumps(doc)), force=True)
    drain()
    return rec, drain


def test_this_torchs_flight_recorder_dump_is_read_whole(real_dump):
    from commprof.capture.flight_recorder import dump_function
    assert dump_function(torch) is not None
    rec, drain = _drain(real_dump)
    assert rec.seen == {}
    assert drain.seen == 3 and drain.lost == 0  # gloo: counted, no GPU times to keep


def test_a_flight_recorder_entry_field_renamed_is_named_and_nothing_raises(real_dump):
    import copy
    doc = copy.deepcopy(real_dump)
    for e in doc["entries"]:
        e["id"] = e.pop("record_id")  # a torch that renamed the ring's order
    rec, drain = _drain(doc)
    assert "record_id" in rec.seen["flight_recorder.fields"]
    assert drain.seen == 0 and rec.json == []


def test_flight_recorder_gpu_times_of_another_shape_are_named_not_kept(real_dump):
    import copy
    doc = copy.deepcopy(real_dump)
    for e in doc["entries"]:
        e["duration_ms"] = "2.5"  # timed (as NCCL's are), but a string: unreadable
        e.pop("profiling_name")
    rec, drain = _drain(doc)
    msg = rec.seen["flight_recorder.fields"]
    assert "duration_ms" in msg and "profiling_name" in msg
    assert drain.seen == 3 and rec.json[-1]["entries"] == []  # counted, their times left out


def test_a_flight_recorder_dump_of_another_signature_or_format(real_dump):
    import json
    rec, drain = _drain(None, dump=lambda: json.dumps(real_dump))  # takes no arguments now
    assert rec.seen == {} and drain.seen == 3
    rec, _ = _drain(None, dump=lambda a, b: json.dumps([real_dump]))
    assert "not what commprof reads" in rec.seen["flight_recorder.format"]
    rec, _ = _drain(None, dump=lambda *a: (_ for _ in ()).throw(RuntimeError("FR is off")))
    assert "FR is off" in rec.seen["flight_recorder.dump"]


def test_a_torch_without_the_flight_recorder_dump_says_so_once():
    from types import SimpleNamespace
    from commprof.capture.flight_recorder import Drain
    bare = SimpleNamespace(_C=SimpleNamespace(_distributed_c10d=SimpleNamespace()))
    rec = FrRec()
    rec.degraded = {}
    drain = Drain(rec, bare, backends={"nccl"})
    drain()
    assert "_dump_fr_trace_json" in rec.seen["flight_recorder.dump"]
    rec.degraded["flight_recorder.dump"] = [1, ""]
    rec.seen.clear()
    drain()
    assert rec.seen == {}  # said once, not at every flush


# -- DDP's and FSDP2's signatures (commprof try: fixes/install.py) ------------------------------

@pytest.fixture
def fixes_installer(monkeypatch):
    """A FixInstaller for the given fixes, its patches of torch undone after the test."""
    from commprof.fixes import parse
    from commprof.fixes.install import FSDP_MODULES, FixInstaller
    import importlib
    DDP = torch.nn.parallel.DistributedDataParallel
    for name in ("__init__", "register_comm_hook", "_register_builtin_comm_hook"):
        monkeypatch.setattr(DDP, name, getattr(DDP, name))
    for mod in FSDP_MODULES:
        m = importlib.import_module(mod)
        if hasattr(m, "fully_shard"):
            monkeypatch.setattr(m, "fully_shard", m.fully_shard)

    def make(spec: str):
        events, rec = [], Degrades()
        installer = FixInstaller(torch, parse(spec, 0), events.append, rec.degrade)
        return installer, events, rec
    return make


@pytest.fixture
def one_rank_group():
    import torch.distributed as dist
    if dist.is_initialized():  # another test of this process left its group: not this test's
        pytest.skip("torch.distributed is already initialized in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield dist
    dist.destroy_process_group()


def test_a_ddp_without_the_fixs_keyword_skips_that_fix_and_builds_as_written(
        fixes_installer, monkeypatch, one_rank_group):
    DDP = torch.nn.parallel.DistributedDataParallel
    real_init = DDP.__init__

    def __init__(self, module, process_group=None):  # a torch whose DDP lost bucket_cap_mb
        real_init(self, module, process_group=process_group)

    monkeypatch.setattr(DDP, "__init__", __init__)
    installer, events, rec = fixes_installer("bucket-cap:1,static-graph")
    installer.install()
    model = DDP(torch.nn.Linear(4, 4))  # would raise TypeError if the fix's keywords were passed
    assert isinstance(model, DDP)
    assert "bucket_cap_mb" in rec.seen["fixes.ddp.signature"]
    status = {e["fix"]: (e["status"], e["why"]) for e in events}
    assert status["bucket-cap:1"][0] == "skipped" and "takes no bucket_cap_mb" in status["bucket-cap:1"][1]
    assert status["static-graph"][0] == "skipped"


def test_a_ddp_comm_hook_registration_of_another_signature_skips_the_fix(
        fixes_installer, monkeypatch, one_rank_group):
    DDP = torch.nn.parallel.DistributedDataParallel

    def register_comm_hook(self, hook):  # a torch whose registration changed its arguments
        raise AssertionError("not reached: the call does not bind")

    monkeypatch.setattr(DDP, "register_comm_hook", register_comm_hook)
    installer, events, rec = fixes_installer("bf16-compress")
    installer.install()
    model = DDP(torch.nn.Linear(4, 4))
    x = torch.ones(2, 4)
    assert torch.equal(model(x), model.module(x))  # the first forward registers: no raise
    assert "fixes.hook" in rec.seen
    (event,) = [e for e in events if e["fix"] == "bf16-compress"]
    assert event["status"] == "skipped" and "TypeError" in event["why"]


def test_a_fully_shard_without_the_fixs_keyword_skips_it_and_runs_as_written(fixes_installer, monkeypatch):
    import torch.distributed.fsdp as fsdp
    calls = []

    def fully_shard(module, *, mesh=None):  # a torch whose fully_shard lost mp_policy
        calls.append(mesh)
        return module

    monkeypatch.setattr(fsdp, "fully_shard", fully_shard)
    installer, events, rec = fixes_installer("bf16-reduce")
    installer.install()
    model = torch.nn.Linear(2, 2)
    assert fsdp.fully_shard(model) is model and calls == [None]
    assert "mp_policy" in rec.seen["fixes.fsdp.signature"]
    assert [(e["fix"], e["status"]) for e in events] == [("bf16-reduce", "skipped")]


def test_a_torch_without_fully_shard_skips_the_fsdp_fixes(fixes_installer, monkeypatch):
    import torch.distributed.fsdp as fsdp
    monkeypatch.delattr(fsdp, "fully_shard")
    installer, events, rec = fixes_installer("reshard-after-forward=false")
    installer.install()
    assert "fully_shard" in rec.seen["fixes.fsdp"]
    assert [(e["fix"], e["status"]) for e in events] == [("reshard-after-forward=false", "skipped")]


def test_this_torchs_ddp_and_fully_shard_take_every_option_fix():
    from commprof.fixes.catalog import FIXES
    from commprof.fixes.install import keywords_refused
    import torch.distributed.fsdp as fsdp
    targets = {"ddp_option": torch.nn.parallel.DistributedDataParallel.__init__,
               "fsdp_option": fsdp.fully_shard}
    for cls in FIXES.values():
        if cls.kind in targets:
            fix = cls("1" if cls.name == "bucket-cap" else "false" if cls.target == "fsdp" else None)
            assert keywords_refused(targets[cls.kind], list(fix.options())) == [], cls.name
