#!/usr/bin/env bash
# GPU check (one H100/H200 machine, <= 8 minutes): NVML counters, a world-size-1 NCCL job and a
# 2-rank gloo job with CUDA tensors under `commprof run`, their reports; then the GPU windows
# (issue 15, items 4-5) on two world-size-1 NCCL jobs: compute and all_reduce overlapping on
# separate streams (overlap must be > 0), and compute that waits on every all_reduce (exposed must
# be ~ comm); and a pass/fail table.
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

# -- GPU windows (issue 15, items 4-5) ---------------------------------------------------------------
# World size 1: NCCL runs a one-rank all_reduce SUM in place as a no-op (no kernel at all), so the
# jobs all-reduce with AVG, which NCCL runs as its oneRankReduce kernel on the NCCL stream.
cat > "$OUT/overlap_job.py" <<'PY'
import sys, torch, torch.distributed as dist
torch.cuda.set_device(0)
dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
n = 4096
a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
g = torch.ones(128 << 20, device="cuda")            # 512 MiB "gradients", independent of the compute
w = torch.nn.Parameter(torch.zeros(1024, device="cuda")); opt = torch.optim.SGD([w], lr=0.1)
for _ in range(int(sys.argv[1])):
    work = dist.all_reduce(g, op=dist.ReduceOp.AVG, async_op=True)   # NCCL stream
    for _ in range(6):
        c = a @ b                                   # default stream, meanwhile: overlap
    work.wait()
    w.grad = torch.ones_like(w); opt.step()
torch.cuda.synchronize()
dist.destroy_process_group()
PY
cat > "$OUT/waits_job.py" <<'PY'
import sys, torch, torch.distributed as dist
torch.cuda.set_device(0)
dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
n = 4096
a0, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
a = a0.clone()
g = torch.zeros(128 << 20, device="cuda")
w = torch.nn.Parameter(torch.zeros(1024, device="cuda")); opt = torch.optim.SGD([w], lr=0.1)
for _ in range(int(sys.argv[1])):
    c = a @ b                                       # compute
    g[: n * n].copy_(c.view(-1))                    # its result is what gets all-reduced
    dist.all_reduce(g, op=dist.ReduceOp.AVG)        # blocking: the default stream waits for NCCL's
    a = a0 + 0.0 * g[: n * n].view(n, n)            # the next compute needs the reduced result
    w.grad = torch.ones_like(w); opt.step()
torch.cuda.synchronize()
dist.destroy_process_group()
PY
for job in overlap waits; do
    timeout 240 python3 -m commprof run --out "$OUT/$job" --sample-hz 0 --gpu-windows 3/10@5 --gpu-trace -- \
        python3 -m torch.distributed.run --standalone --nproc-per-node 1 "$OUT/${job}_job.py" 30 \
        > "$OUT/$job.run.log" 2>&1 \
        && check "GPU windows: $job job under commprof run" PASS \
        || check "GPU windows: $job job under commprof run" FAIL
    timeout 120 python3 -m commprof report "$OUT/$job" --format json > "$OUT/$job.json" 2> "$OUT/$job.report.err"
    timeout 120 python3 -m commprof report "$OUT/$job" --width 160 > "$OUT/$job.txt" 2>&1
    timeout 120 python3 - "$OUT" "$job" > "$OUT/$job.checks" 2>&1 <<'PY'
"""Checks of one GPU-windows job: the capture itself (commprof.analysis.host.load) and the report."""
import json, os, sys
import numpy as np
out, job = sys.argv[1], sys.argv[2]
run = os.path.join(out, job)

def say(ok, label, detail=""):
    print(f"[{'PASS' if ok else 'FAIL'}] GPU windows ({job}): {label}")
    if detail:
        print(f"    {detail}")

def union(iv):
    u = []
    for s, e in sorted(iv):
        if u and s <= u[-1][1]:
            u[-1][1] = max(u[-1][1], e)
        else:
            u.append([s, e])
    return u

def inter(a, b):
    i = j = 0; total = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0, hi - lo)
        if a[i][1] < b[j][1]: i += 1
        else: j += 1
    return total

try:
    from commprof.analysis.host.load import load_run, open_run
    data = load_run(run)
    rd = next(iter(open_run(run).iter_ranks()))
except Exception as exc:  # noqa: BLE001
    say(False, "capture readable", f"{type(exc).__name__}: {exc}")
    sys.exit(0)
g, wins = data.gpu_activity, rd.gpu_windows
names = g["name"].astype(str) if len(g) else g.get("name")
# 1. windows at the intended steps: 3/10@5 over 30 steps -> steps 5-7, 15-17, 25-27
rec = wins[wins["status"] == "recorded"] if len(wins) else wins
firsts = rec["first_step"].tolist() if len(rec) else []
say(firsts == [5, 15, 25] and len(g) > 0, "three windows recorded at steps 5, 15, 25",
    f"windows {wins[['window', 'status', 'first_step', 'steps_ended', 'end_reason', 'records']].to_dict('records') if len(wins) else []}; "
    f"off: {rd.process.get('gpu_windows_off')}; degraded: {rd.degraded.to_dict('records')}")
if not len(g):
    sys.exit(0)
bad = [(int(w), sorted(set(s["step"]))) for w, s in g.groupby("window")
       if not set(s["step"]) <= set(range(5 + 10 * int(w), 5 + 10 * int(w) + 4))]
say(not bad, "every record's step lies in its window (launch step, +1 at most for a late start)",
    f"outside: {bad}; categories {g['category'].astype(str).value_counts().to_dict()}; "
    f"launch matched {float(g['launch_ns'].notna().mean()):.0%} of records")
comm = g[names.str.contains("nccl|oneRankReduce", case=False, regex=True) & (g["category"].astype(str) == "kernel")]
compute = g[~g.index.isin(comm.index) & (g["category"].astype(str) == "kernel")]
say(len(comm) > 0, "NCCL kernels recorded",
    f"{len(comm)} of {len(g)} records; names {sorted(set(comm['name'].astype(str)))[:4]}; streams "
    f"comm {sorted(set(comm['stream']))} compute {sorted(set(compute['stream']))[:4]}")
# 2. clock alignment: each NCCL kernel's launch inside its c10d call's host interval
coll = data.collectives
launched = comm[comm["launch_ns"].notna()]
tol = 50_000
ok_launch = [bool(((coll["t_issue"] - tol <= t) & (t <= coll["t_return"] + tol)).any())
             for t in launched["launch_ns"].astype("int64")]
clock = [(r["window"], r["clock_error_ns"]) for r in rec.to_dict("records")]
say(len(ok_launch) > 0 and np.mean(ok_launch) >= 0.9,
    "clock alignment: NCCL kernel launches fall inside their c10d calls (+-50 us)",
    f"{sum(ok_launch)} of {len(ok_launch)} launches inside; kernels without launch {len(comm) - len(launched)}; "
    f"window clock error bound (ns) {clock}")
# 3. the capture's own overlap (an independent computation from gpu_activity)
uc = union(comm[["start_ns", "end_ns"]].values.tolist())
ux = union(compute[["start_ns", "end_ns"]].values.tolist())
comm_ns, overlap_ns = sum(e - s for s, e in uc), inter(uc, ux)
print(f"    capture: comm {comm_ns / 1e6:.3f} ms, overlap {overlap_ns / 1e6:.3f} ms, "
      f"exposed {(comm_ns - overlap_ns) / 1e6:.3f} ms over {len(rec)} windows")
if job == "overlap":
    say(comm_ns > 0 and overlap_ns > 0, "capture: comm kernels overlap compute (overlap > 0)")
else:
    say(comm_ns > 0 and overlap_ns <= 0.1 * comm_ns, "capture: compute never overlaps the waited comm (exposed ~ comm)")
# 4. Flight Recorder keeps timing every op, windows or not
try:
    doc = json.load(open(os.path.join(out, f"{job}.json")))
except Exception as exc:  # noqa: BLE001
    say(False, "report JSON readable", f"{type(exc).__name__}: {exc} (see {job}.report.err)")
    sys.exit(0)
ops = {o["op"]: o for o in doc.get("ops", [])}
ar = ops.get("all_reduce", {})
timed = (doc.get("run", {}).get("gpu_timing") or {}).get("calls_with_gpu_time", 0)
say(ar.get("count") and timed >= 0.9 * ar["count"], "Flight Recorder GPU times for every all_reduce, between windows too",
    f"{timed} calls with GPU time of {ar.get('count')} all_reduce calls")
# 5. the windows' cost in the overhead section
o = doc.get("overhead") or {}
costs = [r.get("cost_ns") for r in rec.to_dict("records")]
say(o.get("gpu_windows") == len(rec) and (o.get("gpu_window_s_per_rank") or 0) > 0,
    "windows' cost in the report's overhead", f"overhead {o}; per window (ns) {costs}")
# 6. the GPU timeline KPIs of the report (commprof/analysis/gpu/gpu_timeline.py)
ranks = doc.get("ranks") or [{}]
gpu = ranks[0].get("gpu")
if not isinstance(gpu, dict):
    say(False, "report ranks[].gpu", "ranks[].gpu is missing from the report: the GPU timeline "
        "analysis (commprof/analysis/gpu/gpu_timeline.py on gpu_activity) is not integrated yet")
    sys.exit(0)
c, ov, ex = (gpu.get(k) or 0.0 for k in ("comm_s", "overlap_s", "exposed_comm_s"))
detail = f"ranks[0].gpu = {gpu}"
if not c:
    say(False, "report ranks[].gpu has communication", detail + "; no kernel counted as "
        f"communication (NCCL kernels here: {sorted(set(comm['name'].astype(str)))[:3]})")
elif job == "overlap":
    say(ov > 0, f"report: overlap_s > 0 (overlap {ov / c:.0%} of comm)", detail)
else:
    say(ex >= 0.9 * c and abs(c - ov - ex) <= 1e-6 + 1e-3 * c,
        f"report: exposed_comm_s ~ comm_s ({ex / c:.0%})", detail)
# 7. item 5: the headline, verdict, what-if and gate stand on the GPU figures
k = doc.get("kpis") or {}
host = k.get("host") or {}
detail = (f"time_basis {k.get('time_basis')}; comm {k.get('comm_fraction')}, exposed "
          f"{k.get('exposed_comm_fraction')}; host {host.get('comm_fraction')}/{host.get('exposed_comm_fraction')}; "
          f"verdict: {doc.get('verdict')}")
say(k.get("time_basis") == "gpu_windows" and k.get("exposed_comm_fraction") is not None
    and "host" in k, "headline on the GPU timeline, host figures kept as kpis.host", detail)
e, cf = k.get("exposed_comm_fraction") or 0.0, k.get("comm_fraction") or 0.0
if job == "overlap":
    say(cf > 0 and e < cf, "headline: exposed < in flight (overlap hides part)", detail)
else:
    say(cf > 0 and e >= 0.9 * cf, "headline: exposed ~ in flight (compute waits on every all_reduce)", detail)
w = doc.get("whatif") or []
say(bool(w) and abs(w[0]["inputs"]["exposed_s_per_step"] - (k.get("exposed_comm_s_per_step") or -1)) < 1e-9,
    "what-if starts from the GPU figures", f"inputs {w[0]['inputs'] if w else None}")
PY
    cat "$OUT/$job.checks"
    while IFS= read -r line; do
        case "$line" in
            "[PASS] "*) RESULT["${line#\[PASS\] }"]=PASS ;;
            "[FAIL] "*) RESULT["${line#\[FAIL\] }"]=FAIL ;;
        esac
    done < "$OUT/$job.checks"
done
ls -la "$OUT"/overlap/kineto "$OUT"/waits/kineto 2>/dev/null | head -20

# -- no GPU windows: "GPU timeline not measured" (issue 15, item 5) ----------------------------------
timeout 180 python3 -m commprof run --out "$OUT/nowin" --sample-hz 0 --gpu-windows off -- \
    python3 -m torch.distributed.run --standalone --nproc-per-node 1 "$OUT/waits_job.py" 12 \
    > "$OUT/nowin.run.log" 2>&1
timeout 120 python3 -m commprof report "$OUT/nowin" --format json > "$OUT/nowin.json" 2>/dev/null
python3 - "$OUT/nowin.json" <<'PY' && check "no GPU windows: GPU timeline not measured" PASS || check "no GPU windows: GPU timeline not measured" FAIL
import json, sys
doc = json.load(open(sys.argv[1]))
k = doc["kpis"]
print("    nowin:", k.get("time_basis"), doc["assessment"]["level"], doc["verdict"][:80])
sys.exit(0 if k.get("time_basis") == "host_launch" and doc["assessment"]["level"] == "unmeasured"
         and k.get("exposed_comm_fraction") is None and k.get("bytes_per_step") else 1)
PY
# small outputs worth committing under tests/data/gpu/ (reports and checks, not captures)
mkdir -p "$OUT/keep" && for f in overlap waits nowin; do
    cp "$OUT/$f.json" "$OUT/keep/gpu_windows_$f.report.json" 2>/dev/null
    cp "$OUT/$f.checks" "$OUT/keep/gpu_windows_$f.checks.txt" 2>/dev/null
done

echo; echo "summary:"; for k in "${!RESULT[@]}"; do echo "  ${RESULT[$k]}  $k"; done | sort -k2
echo "outputs in $OUT"
