"""``COMMPROF_SEED_OFFSET`` (capture/seeds.py): every seed the job sets through the documented
entry points draws what seed + K draws without commprof; K = 0 changes nothing.  Each case runs in
a fresh interpreter (the patches are process-wide), the oracle in another without the patch."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

DRAWS = r"""
import json, random, sys
import numpy as np, torch
from torch.utils.data import TensorDataset
from torch.utils.data.distributed import DistributedSampler
OFFSET = int(sys.argv[1]); PATCH = sys.argv[2] == "1"
if PATCH:
    from commprof.capture.seeds import SeedOffset
    events = []
    SeedOffset(torch, OFFSET, events.append).install()
    S = 7
else:
    S = 7 + OFFSET  # the oracle: the seed itself moved, no commprof
out = {}
torch.manual_seed(S); out["torch"] = torch.rand(3).tolist()
g = torch.Generator().manual_seed(S); out["generator"] = torch.rand(3, generator=g).tolist()
random.seed(S); out["random"] = [random.random() for _ in range(3)]
out["Random"] = [random.Random(S).random()]
np.random.seed(S); out["numpy"] = np.random.rand(3).tolist()
out["default_rng"] = np.random.default_rng(S).random(3).tolist()
ds = TensorDataset(torch.arange(50))
sampler = DistributedSampler(ds, num_replicas=2, rank=0, seed=S); out["sampler"] = list(sampler)
if PATCH:
    out["events"] = sorted({e["kind"] for e in events if e["event"] == "seed"})
print(json.dumps(out))
"""


def _draws(offset: int, patch: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", DRAWS, str(offset), "1" if patch else "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("offset", [3])
def test_every_documented_seed_is_offset(offset):
    patched, oracle = _draws(offset, True), _draws(offset, False)
    kinds = patched.pop("events")
    assert patched == oracle
    assert {"torch.manual_seed", "torch.Generator.manual_seed", "random.seed", "numpy.random.seed",
            "numpy.random.default_rng"} <= set(kinds)


def test_offset_zero_changes_nothing():
    assert _draws(0, True) | {"events": None} == _draws(0, False) | {"events": None}
