#!/usr/bin/env bash
# GPU check of the link sampler, for a machine with an NVIDIA GPU (none in CI): NVML counters are
# readable, the sampler runs ~10 s beside a 1-GPU NCCL job, and the report shows the GPU rows.
#   bash scripts/gpu_check.sh [OUT_DIR]
set -euo pipefail
out="${1:-/tmp/commprof-gpu-check}"
rm -rf "$out" && mkdir -p "$(dirname "$out")"
python3 - <<'PY'
from commprof.sampling.nvml import NvmlSource
src = NvmlSource()
print("NVML status:", src.status())
got = {}
src.read(lambda s, v: got.__setitem__(f"{s.source}/{s.device}/{s.metric}", v))
print("one read:", got)
assert got, "NVML gave no counter"
PY
job="$(mktemp --suffix=.py)"
cat > "$job" <<'PY'
import time, torch, torch.distributed as dist
dist.init_process_group("nccl")
torch.cuda.set_device(0)
x = torch.ones(64 << 20, device="cuda")
t0 = time.time()
while time.time() - t0 < 10:
    dist.all_reduce(x)
    torch.cuda.synchronize()
dist.destroy_process_group()
PY
python3 -m commprof run --out "$out" --sample-hz 10 -- \
    python3 -m torch.distributed.run --standalone --nproc-per-node 1 "$job"
python3 -m commprof report "$out" --width 160 | tee "$out/report.txt"
python3 -m commprof report "$out" -f json > "$out/report.json"
python3 - "$out/report.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
lk = doc["links"]
gauges = [g for g in lk["gauges"] if g["device"] == "gpu0"]
nvl = [r for r in lk["interfaces"] if r["source"] == "nvlink"]
print("gpu0 gauges:", gauges)
print("nvlink rows:", nvl, "nvml status:", lk["sampler"][0]["sources"]["nvml"])
assert any(g["metric"] == "utilization" for g in gauges), "no GPU utilisation row"
print("GPU check passed")
PY
