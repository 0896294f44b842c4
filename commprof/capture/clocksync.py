"""Clock alignment probes and the run id, exchanged once the default process group exists.

* **run id**: rank 0 draws a random id and publishes it in the job's own store
  (``commprof/<restart>/run_id``); every rank reads it and records it, so per-node run directories of one
  run can be merged and directories of different runs refused.
* **clock probes**: ``ROUNDS`` barriers on the default group, right after
  ``init_process_group`` returns (phase 0) and right before ``destroy_process_group`` (phase 1).
  Each rank records its own clock when each barrier returns (``MARK_CLOCK_SYNC``, value =
  phase·100 + round).  A barrier releases all ranks within about one network latency, so the
  difference of two ranks' readings of the same round estimates their clock offset; the analysis
  takes the median over rounds, the spread as the uncertainty, and the two phases for drift.

These messages are commprof's own: recording is off while they run, so they never appear in the
job's records, op counts or sequence numbers.
"""
from __future__ import annotations

import os
import uuid
from datetime import timedelta

from commprof.capture.recorder import Recorder
from commprof.format import schema

ROUNDS = 7
RUN_ID_KEY = "run_id"


AGREE_TIMEOUT_S = 10.0


def exchange(rec: Recorder, torch, phase: int) -> None:
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized():
        return
    was = rec.enabled
    rec.enabled = False
    try:
        store = dist.distributed_c10d._get_default_store()
        if phase == 0:
            _run_id(rec, dist, store)
        world = dist.get_world_size()
        # Barriers only when every rank is here to take part: a rank that is not captured, or
        # that never calls destroy_process_group, must not leave the others waiting in them.
        if world < 2 or not agree(store, f"sync{phase}", world, AGREE_TIMEOUT_S):
            rec.json.append({"type": "event", "event": "clock_sync_skipped", "phase": phase})
            return
        for k in range(ROUNDS):
            dist.barrier()
            rec.mark.append((schema.MARK_CLOCK_SYNC, rec.clock(), phase * 100 + k))
    finally:
        rec.enabled = was


def _key(name: str) -> str:
    return f"commprof/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{name}"


def agree(store, name: str, world: int, timeout_s: float) -> bool:
    """True on every rank, or False on every rank: whether all ``world`` ranks arrived here within
    ``timeout_s`` of each other.  One decision key, set once with compare-and-set: the last rank to
    arrive writes "go", a rank that gave up waiting writes "abort"; whichever came first holds."""
    count = store.add(_key(f"{name}/count"), 1)
    key = _key(f"{name}/decision")
    if count >= world:
        store.compare_set(key, "", "go")
    else:
        try:
            store.wait([key], timedelta(seconds=timeout_s))
        except RuntimeError:  # DistStoreError: timed out
            store.compare_set(key, "", "abort")
    return store.get(key) == b"go"


def _run_id(rec: Recorder, dist, store) -> None:
    if dist.get_rank() == 0:
        run_id = uuid.uuid4().hex
        store.set(_key(RUN_ID_KEY), run_id)
    else:
        store.wait([_key(RUN_ID_KEY)], timedelta(seconds=AGREE_TIMEOUT_S))
        run_id = store.get(_key(RUN_ID_KEY)).decode()
    rec.json.append({"type": "run", "run_id": run_id, "world_size": dist.get_world_size()})
