"""torch's own c10d collective hooks (torch >= 2.14: ``ProcessGroup.register_pre_hook`` /
``register_post_hook``) against commprof's native dispatcher kernel: µs added per call, and what
each one sees.

Part 1, cost: a 1-rank gloo job under ``commprof run --capture native`` times blocks of --ops tiny
blocking all_reduces in four states, interleaved --reps times (machine-load drifts cancel):

  plain           the native kernel off (one atomic load, then re-dispatch), torch's Work.wait
  native          the native kernel and its Work.wait on (what ``commprof run`` does)
  hooks (no-op)   kernel off; a pre and a post hook that return at once (the floor of the route)
  hooks (record)  kernel off; the hooks keep what a capture needs: op, op_id, async, the input
                  tensors' element counts and dtypes, a monotonic time at issue and at return

Part 2, coverage (--coverage): a 2-rank gloo torchrun job issues each kind of call once and counts
the hook invocations (eager, async, coalesced, functional collectives, DTensor, P2P,
batch_isend_irecv, all_to_all_single, reduce_scatter) — printed as a table.

    python benchmarks/c10d_hooks_cost.py --ops 2000 --reps 9
    python benchmarks/c10d_hooks_cost.py --coverage
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap

from native_states import free_port, run_states  # benchmarks/native_states.py

COST_JOB = textwrap.dedent("""
    import os, sys, time, statistics, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    pg = dist.group.WORLD
    if not hasattr(pg, "register_pre_hook"):
        sys.exit(f"torch {torch.__version__} has no c10d collective hooks (2.14+)")
    n, reps = int(sys.argv[2]), int(sys.argv[3])
    x = torch.ones(1)
    Work = torch.distributed.Work
    wrapped = Work.wait
    orig = getattr(wrapped, "__commprof_original__", None)
    nat = sys.modules.get("commprof_native")
    if orig is None or nat is None:
        sys.exit("not under commprof run --capture native")
    kept = []
    clock = time.monotonic_ns
    def pre_record(a):
        kept.append((a.name, a.op_id, a.async_op, [(t.numel(), t.dtype) for t in a.input_tensors], clock()))
    def post_record(a):
        kept.append((a.op_id, clock()))
    def noop(a):
        return None
    def block():
        t0 = time.perf_counter_ns()
        for _ in range(n):
            dist.all_reduce(x)
        return (time.perf_counter_ns() - t0) / n / 1e3
    def state(kernel, wait, hooks):
        Work.wait = wait
        nat.set_enabled(kernel)
        if hooks:
            pg.register_pre_hook(11, hooks[0])
            pg.register_post_hook(12, hooks[1])
        try:
            return block()
        finally:
            if hooks:
                pg.unregister_pre_hook(11)
                pg.unregister_post_hook(12)
            kept.clear()
    states = {"plain": (False, orig, None), "native": (True, wrapped, None),
              "hooks (no-op)": (False, orig, (noop, noop)),
              "hooks (record)": (False, orig, (pre_record, post_record))}
    for _ in range(500):
        dist.all_reduce(x)
    res = {k: [] for k in states}
    for _ in range(reps):
        for name, args in states.items():
            res[name].append(state(*args))
    Work.wait, _ = wrapped, nat.set_enabled(True)
    for k, v in res.items():
        print(f"RESULT {k}|{statistics.median(v)}|{min(v)}")
    dist.destroy_process_group()
""")

COVERAGE_JOB = textwrap.dedent("""
    import os, torch, torch.distributed as dist
    import torch.distributed._functional_collectives as fc
    dist.init_process_group("gloo")
    rank, pg = dist.get_rank(), dist.group.WORLD
    fired = []
    pg.register_pre_hook(1, lambda a: fired.append(str(a.name).split(".")[-1]))
    def count(label, fn):
        fired.clear()
        fn()
        dist.barrier()
        calls = fired[:-1]  # the barrier's own
        if rank == 0:
            print(f"COVER {label}|{len(calls)}|{','.join(calls) or '-'}")
    t = torch.ones(8)
    count("all_reduce (eager)", lambda: dist.all_reduce(t))
    count("all_reduce (async_op)", lambda: dist.all_reduce(t, async_op=True).wait())
    def coalesced():
        with dist._coalescing_manager(async_ops=True) as cm:
            dist.all_reduce(t); dist.all_reduce(t)
        cm.wait()
    count("2 all_reduce, coalesced", coalesced)
    count("functional all_reduce", lambda: fc.wait_tensor(fc.all_reduce(t, "sum", pg)))
    count("reduce_scatter_tensor", lambda: dist.reduce_scatter_tensor(torch.zeros(4), t))
    count("all_to_all_single", lambda: dist.all_to_all_single(torch.zeros(8), t))
    peer = 1 - rank
    def p2p():
        r = torch.zeros(8)
        reqs = [dist.isend(t, peer), dist.irecv(r, peer)] if rank == 0 else [dist.irecv(r, peer), dist.isend(t, peer)]
        for q in reqs: q.wait()
    count("isend + irecv", p2p)
    def batch():
        r = torch.zeros(8)
        ops = [dist.P2POp(dist.isend, t, peer), dist.P2POp(dist.irecv, r, peer)]
        for q in dist.batch_isend_irecv(ops): q.wait()
    count("batch_isend_irecv (1 send, 1 recv)", batch)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor, Shard, Replicate
    mesh = init_device_mesh("cpu", (2,))
    d = distribute_tensor(torch.ones(4, 4), mesh, [Shard(0)])
    count("DTensor redistribute Shard->Replicate", lambda: d.redistribute(mesh, [Replicate()]).to_local())
    dist.destroy_process_group()
""")


def cost(ops: int, reps: int) -> None:
    rows = run_states(COST_JOB, [str(ops), str(reps)], 4, "commprof-hooks-")
    print(f"µs per blocking all_reduce (1-rank gloo), {reps} interleaved blocks of {ops}")
    print(f"{'state':16s}{'median':>9s}{'min':>9s}{'added (median)':>16s}")
    for name, (med, low) in rows.items():
        print(f"{name:16s}{med:9.2f}{low:9.2f}{med - rows['plain'][0]:+16.2f}")


def coverage() -> None:
    with tempfile.TemporaryDirectory(prefix="commprof-hooks-") as d:
        job = f"{d}/job.py"
        with open(job, "w") as f:
            f.write(COVERAGE_JOB)
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                               "--master-addr=127.0.0.1", f"--master-port={free_port()}", job],
                              capture_output=True, text=True, timeout=300)
    rows = [line[6:].split("|") for line in proc.stdout.splitlines() if line.startswith("COVER ")]
    if not rows:
        sys.exit(f"the job failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"{'call':40s}{'pre hooks':>10s}  ops the hooks named")
    for label, n, names in rows:
        print(f"{label:40s}{n:>10s}  {names}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=2000, help="all_reduces per block")
    ap.add_argument("--reps", type=int, default=9, help="interleaved blocks per state")
    ap.add_argument("--coverage", action="store_true", help="the coverage table instead of the cost")
    args = ap.parse_args()
    coverage() if args.coverage else cost(args.ops, args.reps)


if __name__ == "__main__":
    main()
