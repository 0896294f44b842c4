#!/usr/bin/env bash
# GPU check (one H100/H200 machine, <= 5 minutes): NVML counters, a world-size-1 NCCL job and a
# 2-rank gloo job with CUDA tensors under `commprof run`, their reports, and a pass/fail table.
#   OUT=/tmp/gpu-check bash scripts/gpu_check.sh        (run directories and reports land in $OUT)
# Small results worth keeping (reports, not captures) can be copied to tests/data/gpu/.
set -uo pipefail
OUT="${OUT:-/tmp/commprof-gpu-check}"
rm -rf "$OUT" && mkdir -p "$OUT"
declare -A RESULT
check() { RESULT["$1"]="$2"; echo "[$2] $1"; }

python3 - > "$OUT/nvml.json" <<'PY'
import json
from commprof.sampling.nvml import NvmlSource
src = NvmlSource()
got = {}
src.read(lambda s, v: got.__setitem__(f"{s.source}/{s.device}/{s.metric}", v))
print(json.dumps({"status": src.status(), "read": got}, indent=1, default=str))
PY
grep -q '"available": true' "$OUT/nvml.json" && check "NVML readable" PASS || check "NVML readable" FAIL

cat > "$OUT/nccl_job.py" <<'PY'
import time, torch, torch.distributed as dist
torch.cuda.set_device(0)
dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
x = torch.ones(64 << 20, device="cuda")          # 256 MiB
w = torch.nn.Parameter(torch.zeros(1024, device="cuda"))
opt = torch.optim.SGD([w], lr=0.1)
t0 = time.time()
while time.time() - t0 < 20:
    y = x * 1.0001                                 # compute on the default stream
    dist.all_reduce(y)                             # NCCL stream, async w.r.t. the host
    w.grad = torch.ones_like(w); opt.step()
torch.cuda.synchronize()
dist.destroy_process_group()
PY
cat > "$OUT/gloo_cuda_job.py" <<'PY'
import torch, torch.distributed as dist
dist.init_process_group("gloo")
x = torch.ones(1 << 20, device="cuda")
w = torch.nn.Parameter(torch.zeros(1024)); opt = torch.optim.SGD([w], lr=0.1)
for _ in range(50):
    dist.all_reduce(x); w.grad = torch.ones_like(w); opt.step()
dist.destroy_process_group()
PY
timeout 180 python3 -m commprof run --out "$OUT/nccl" --sample-hz 10 -- \
    python3 -m torch.distributed.run --standalone --nproc-per-node 1 "$OUT/nccl_job.py" \
    && check "NCCL job under commprof run" PASS || check "NCCL job under commprof run" FAIL
timeout 120 python3 -m commprof run --out "$OUT/gloo_cuda" --sample-hz 10 -- \
    python3 -m torch.distributed.run --standalone --nproc-per-node 2 "$OUT/gloo_cuda_job.py" \
    && check "gloo + CUDA tensors under commprof run" PASS || check "gloo + CUDA tensors under commprof run" FAIL
for run in nccl gloo_cuda; do
    python3 -m commprof report "$OUT/$run" --width 160 > "$OUT/$run.txt" 2>&1
    python3 -m commprof report "$OUT/$run" -o "$OUT/$run.json" 2>/dev/null
done
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
doc = json.load(open(os.path.join(out, "nccl.json")))
g = doc["run"]["gpu_timing"]; ops = {o["op"]: o for o in doc["ops"]}
ar = ops.get("all_reduce", {})
print(f"NCCL all_reduce: {ar.get('count')} calls/rank; host time {ar.get('time_s')} s; "
      f"GPU time {ar.get('gpu_time_s')} s; busbw host {ar.get('busbw_gbps')} GB/s, GPU {ar.get('gpu_busbw_gbps')} GB/s")
print("gpu_timing:", g, "nccl_version:", doc["run"].get("nccl_version"))
lk = doc.get("links") or {}
print("gauges:", [(x["device"], x["metric"], round(x["mean"], 1)) for x in lk.get("gauges", [])])
ok = g["calls_with_gpu_time"] > 0 and any(x["metric"] == "utilization" for x in lk.get("gauges", []))
print("GPU rows and GPU times:", "PASS" if ok else "FAIL")
PY
echo; echo "summary:"; for k in "${!RESULT[@]}"; do echo "  ${RESULT[$k]}  $k"; done
echo "outputs in $OUT"
