"""The typer application: one function per command, thin wrappers over the modules that do the work."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="commprof: how much does communication slow your distributed training?")


@app.callback()
def _root() -> None:
    """commprof: how much does communication slow your distributed training?"""


class _RunCommand(TyperCommand):
    """``commprof run``: unknown options pass through to COMMAND, so remember how many arguments
    came after ``--``; what came before it and is left over starts COMMAND, unless it is an option
    of ours that does not exist (``commprof run --bogus -- train.py``)."""

    def parse_args(self, ctx, args):
        ctx.meta["commprof.after_dashdash"] = (len(args) - args.index("--") - 1) if "--" in args else 0
        return super().parse_args(ctx, args)


def _check_unknown_option(ctx: typer.Context, command: list[str]) -> None:
    """A leftover before ``--`` that looks like an option is a typo of ours, not the job's."""
    from commprof.errors import UsageError
    before = command[:len(command) - ctx.meta.get("commprof.after_dashdash", 0)]
    if before and before[0].startswith("-") and before[0] != "-":
        name = before[0].split("=", 1)[0]
        raise UsageError(f"{name}: no such option of `commprof run` (see `commprof run --help`; "
                         "the job's command goes after `--`)")


@app.command(cls=_RunCommand, short_help="Run a job with every collective of every worker captured.",
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(help="The job to run, after `--`.")],
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory (default: a new one under ./commprof-runs/); {VAR} expands from the environment, e.g. runs/{SLURM_JOB_ID}/{SLURM_NODEID}.")] = None,
    flush_interval: Annotated[float, typer.Option(help="Seconds between capture flushes in each worker.")] = 1.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No commprof messages on stderr.")] = False,
    hang_timeout: Annotated[Optional[float], typer.Option(help="Report a hang when a collective stays pending this many seconds (writes RUN/hang.json); also say when steps stop with nothing pending.")] = None,
    kill_on_hang: Annotated[bool, typer.Option(help="Stop every process of the job (SIGTERM, SIGKILL 10 s later) once a hang is reported; exit status 124.")] = False,
    sample_hz: Annotated[float, typer.Option(help="Link counter samples per second on this node (0: off).")] = 10.0,
    probe: Annotated[bool, typer.Option(help="Run `commprof probe` with the job's torchrun launcher first (RUN/probe.json).")] = False,
    probe_sizes: Annotated[str, typer.Option(help="Sizes for --probe.")] = "8B:16MiB:4",
    join: Annotated[bool, typer.Option(help="Share --out with the other nodes' `commprof run` (a shared file system): create it or add to it.")] = False,
    gpu_timing: Annotated[bool, typer.Option(help="GPU-side NCCL op times through PyTorch's Flight Recorder (sets TORCH_FR_BUFFER_SIZE and TORCH_NCCL_ENABLE_TIMING unless you did).")] = True,
    gpu_windows: Annotated[Optional[str], typer.Option(help="CUDA jobs: record the GPU timeline with torch.profiler (CUDA activity only) for STEPS steps every EVERY steps after step AFTER: STEPS/EVERY[@AFTER] (EVERY 0: once), or off. Default 3/100@5.")] = None,
    gpu_trace: Annotated[bool, typer.Option(help="Also keep each GPU window's Kineto trace (RUN/kineto/*.pt.trace.json, for Perfetto or HTA).")] = False,
    capture: Annotated[str, typer.Option(help="The c10d kernel: auto (default: the C++ kernel, built on first use and cached, else the Python one), native (the C++ kernel; its absence is a recorded fault) or python.")] = "auto",
    fix: Annotated[Optional[str], typer.Option(help="Apply software fixes inside the job, e.g. bf16-compress or local-sgd:4 (see `commprof try`, docs/try.md).")] = None,
    fix_warmup: Annotated[int, typer.Option(help="Steps of full synchronization before PowerSGD / local SGD start.")] = 5,
    max_steps: Annotated[Optional[int], typer.Option(help="End the job after this many training steps (the capture is closed, exit status 0).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Show the job's KPIs while it runs: a panel on stderr when it is a terminal, else one line every --live-interval seconds.")] = False,
    live_interval: Annotated[float, typer.Option(help="--live without a terminal: seconds between summary lines.")] = 30.0,
    live_steps: Annotated[int, typer.Option(help="--live and the exporter's sliding window: the last N steps.")] = 20,
    prometheus: Annotated[Optional[str], typer.Option(help="Serve Prometheus metrics at http://[HOST:]PORT/metrics (HOST default 127.0.0.1; 0.0.0.0 for every interface).")] = None,
    prometheus_textfile: Annotated[Optional[str], typer.Option(help="Write Prometheus metrics into DIR for node_exporter's textfile collector (atomic rename, every second).")] = None,
    prometheus_linger: Annotated[float, typer.Option(help="Keep serving the final metrics this many seconds after the job ended.")] = 0.0,
    node_summary: Annotated[bool, typer.Option(help="At job end, reduce this node's captures into RUN/summaries/ (the report then reads that instead; docs/scaling.md).")] = True,
    share_group: Annotated[bool, typer.Option("--share-group", help="Make the run directory readable by your group (directories 0750, files 0640; default: yours alone, 0700/0600).")] = False,
) -> int:
    """Run COMMAND (e.g. `torchrun ... train.py`) with every collective of every worker captured."""
    _check_unknown_option(ctx, list(command))
    from commprof.cli.run import run_command
    from commprof.cli.run_live import LiveOptions
    from commprof.launch.supervisor import die_like
    live_opts = LiveOptions(live, live_interval, live_steps, prometheus, prometheus_textfile,
                            prometheus_linger)
    returncode, _ = run_command(list(command), out=out, flush_interval=flush_interval, quiet=quiet,
                                hang_timeout=hang_timeout, kill_on_hang=kill_on_hang,
                                sample_hz=sample_hz, probe=probe, probe_sizes=probe_sizes,
                                join=join, gpu_timing=gpu_timing, gpu_windows=gpu_windows,
                                gpu_trace=gpu_trace, capture=capture, fix=fix,
                                fix_warmup=fix_warmup, max_steps=max_steps, live=live_opts,
                                node_summary=node_summary, share_group=share_group)
    return die_like(returncode)


@app.command("try", cls=_RunCommand, short_help="Run a software fix on the unmodified job: time, bytes, loss.",
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def try_(
    ctx: typer.Context,
    fixes: Annotated[str, typer.Argument(help="FIX[,FIX...] applied together, FIX/FIX... each on its own (bf16-compress, fp16-compress, powersgd[:RANK], local-sgd:K, bucket-cap:MB, static-graph, grad-as-bucket-view, reshard-after-forward=false, bf16-reduce) or auto.")],
    command: Annotated[list[str], typer.Argument(help="The job to run, after `--`.")],
    baseline: Annotated[Optional[str], typer.Option(help="A run of the job without the fix (default: run one first).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="End each run after N steps.")] = None,
    repeat: Annotated[int, typer.Option(help="Runs per side, interleaved (baseline, fix, baseline, fix, ...); run i of each side with seed offset i. 2 or more measure the noise band.")] = 2,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Directory for the runs (default: ./commprof-runs/try-<time>).")] = None,
    warmup: Annotated[int, typer.Option(help="Steps of each rank left out of the step KPIs.")] = 2,
    fix_warmup: Annotated[int, typer.Option(help="Steps of full synchronization before PowerSGD / local SGD start.")] = 5,
    loss_tolerance: Annotated[Optional[float], typer.Option(help="Also reject a fix whose metric (or loss) is worse than the baseline's by more than this fraction, even within the noise, e.g. 0.01.")] = None,
    budget: Annotated[Optional[str], typer.Option(help="auto: time for the whole search, e.g. 30m (the default), 1h, 900s.")] = None,
    metric: Annotated[Optional[str], typer.Option(help="Judge by this commprof.metric name (default: the first every run reported; none: the training loss).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")] = False,
    resume: Annotated[bool, typer.Option(help="Reuse the finished runs already in --out (same fix, exit 0) instead of running them again.")] = False,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the results (commprof.try/1) to this file.")] = None,
) -> int:
    """Run the job with FIX applied (and without it, unless --baseline): step time, bytes, the
    loss curve, and the what-if's projection of the same fix."""
    _check_unknown_option(ctx, list(command))
    from commprof.cli.try_ import try_command
    return try_command(fixes, list(command), baseline, steps, repeat, out, warmup, fix_warmup,
                       loss_tolerance, quiet, resume, json_out, metric, budget)


@app.command(short_help="Summarize a run: the three KPIs, tables and a verdict.")
def report(
    run_dir: Annotated[Optional[list[str]], typer.Argument(help="Run directory (default: the latest under ./commprof-runs); several directories of one run (one per node) are merged; or a saved JSON report to render again.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="terminal or json (default: from -o's suffix, else terminal).")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    warmup: Annotated[int, typer.Option(help="Steps of each rank left out of the medians.")] = 2,
    width: Annotated[Optional[int], typer.Option(help="Terminal report width.")] = None,
    save_baseline: Annotated[Optional[str], typer.Option(help="Write a compact baseline (commprof.baseline/1) for `commprof gate --baseline` instead of a report.")] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Processes reducing the capture files (default: one per core for runs over 64 MB; 1: none).")] = None,
    from_captures: Annotated[bool, typer.Option(help="Reduce every capture file again, ignoring the node summaries `commprof run` wrote.")] = False,
    scheduler: Annotated[Optional[str], typer.Option(help="Reduce on this Dask cluster instead (tcp://HOST:8786 or a scheduler file; pip install 'commprof[cluster]').")] = None,
    rank: Annotated[Optional[int], typer.Option("--rank", help="The rank of a single profiler trace file that records none (no distributedInfo.rank, no rank in its name).")] = None,
) -> int:
    """Summarize a run: the three KPIs, per-op and per-rank tables, a verdict."""
    if save_baseline:
        from commprof.cli.gate import save_baseline_command
        return save_baseline_command(run_dir[0] if run_dir else None, save_baseline,
                                     "auto" if warmup == 2 else str(warmup))
    from commprof.cli.report import report_command
    return report_command(run_dir, fmt, output, warmup, width, jobs, scheduler, not from_captures, rank)


@app.command(short_help="Write a run's frames (docs/data.md) as Parquet files.")
def export(
    run_dir: Annotated[Optional[str], typer.Argument(help="Run directory (default: the latest under ./commprof-runs).")] = None,
    parquet: Annotated[Optional[str], typer.Option("--parquet", help="Write the frames as Parquet under this directory (calls partitioned by rank: calls/rank=N/).")] = None,
    warmup: Annotated[int, typer.Option(help="Steps of each rank not marked measured in steps.")] = 2,
    force: Annotated[bool, typer.Option(help="Overwrite an earlier export in a non-empty directory.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> int:
    """Write a run's frames (calls, waits, steps, ranks, ops, links, gpu_kernels, hang) as Parquet."""
    from commprof.cli.export import export_command
    return export_command(run_dir, parquet, warmup, force, quiet)


@app.command(short_help="Check a run against rules; exit 1 when one fails.")
def gate(
    run: Annotated[list[str], typer.Argument(help="The run to check: run directory, saved report or baseline; several runs of the same job are judged together (run-to-run spread).")],
    baseline: Annotated[Optional[list[str]], typer.Option(help="Run directory, saved report or baseline to compare against (repeatable: several baseline runs).")] = None,
    max_comm_fraction: Annotated[Optional[str], typer.Option(help="Median in-flight share of step time, e.g. 0.30.")] = None,
    max_exposed_comm_fraction: Annotated[Optional[str], typer.Option(help="Median exposed share of step time, e.g. 0.15.")] = None,
    max_bytes_per_step: Annotated[Optional[str], typer.Option(help="Median S per step per rank, e.g. 1.2GB.")] = None,
    max_step_time: Annotated[Optional[str], typer.Option(help="Median step time, e.g. 250ms.")] = None,
    min_busbw: Annotated[Optional[list[str]], typer.Option(help="OP[:SIZE+]=RATE, e.g. all_reduce:1MB+=10GB/s (repeatable).")] = None,
    max_regression: Annotated[Optional[list[str]], typer.Option(help="METRIC=+AMOUNT vs --baseline: exposed_comm_fraction=+5pp, step_time=+10% (repeatable).")] = None,
    max: Annotated[Optional[list[str]], typer.Option("--max", help="Any metric: METRIC=VALUE upper limit (repeatable).")] = None,
    min: Annotated[Optional[list[str]], typer.Option("--min", help="Any metric: METRIC=VALUE lower limit (repeatable).")] = None,
    skip_steps: Annotated[Optional[str], typer.Option(help="Warm-up steps to leave out: a number, or auto (detected).")] = None,
    confidence: Annotated[Optional[float], typer.Option(help="Bootstrap confidence for regressions (default 0.95).")] = None,
    config: Annotated[Optional[str], typer.Option(help="Rules file (default: ./commprof.toml [gate] or pyproject.toml [tool.commprof.gate]).")] = None,
    junit: Annotated[Optional[str], typer.Option(help="Write JUnit XML (one testcase per rule).")] = None,
    markdown: Annotated[Optional[str], typer.Option(help="Write a Markdown table (also appended to $GITHUB_STEP_SUMMARY when set).")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the results as JSON.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Table width.")] = None,
) -> int:
    """Check a run against rules; exit 0 pass, 1 a rule failed, 2 bad input."""
    from commprof.cli.gate import gate_command
    flags = dict(baseline=baseline, max_comm_fraction=max_comm_fraction,
                 max_exposed_comm_fraction=max_exposed_comm_fraction,
                 max_bytes_per_step=max_bytes_per_step, max_step_time=max_step_time,
                 min_busbw=min_busbw, max_regression=max_regression, max=max, min=min,
                 skip_steps=skip_steps, confidence=confidence)
    return gate_command(run, flags, config, junit, markdown, json_out, width)


@app.command(short_help="Compare the KPIs of two runs, with a verdict per KPI.")
def compare(
    runs: Annotated[list[str], typer.Argument(help="A B (directory, saved report or baseline each); with --baseline: B's runs.")],
    baseline: Annotated[Optional[list[str]], typer.Option(help="A's runs, repeatable: several runs per side are judged by their run-to-run spread.")] = None,
    skip_steps: Annotated[Optional[str], typer.Option(help="Warm-up steps to leave out: a number, or auto.")] = None,
    confidence: Annotated[float, typer.Option(help="Bootstrap confidence of 'within noise'.")] = 0.95,
    markdown: Annotated[Optional[str], typer.Option(help="Write a Markdown table.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Table width.")] = None,
) -> int:
    """Side-by-side KPIs of two runs (or two sides of several runs): deltas and a verdict per KPI
    (better / worse / within noise)."""
    from commprof.cli.gate import compare_command, compare_sides
    a, b = compare_sides(runs, baseline)
    return compare_command(a, b, skip_steps, confidence, markdown, width)


@app.command(short_help="Measure what the fabric can do, like nccl-tests.",
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def probe(
    launcher: Annotated[Optional[list[str]], typer.Argument(help="Optional: `-- torchrun [OPTIONS]` (no script) for multi-node.")] = None,
    nproc: Annotated[int, typer.Option(help="Ranks on this machine (without a launcher).")] = 2,
    sizes: Annotated[str, typer.Option(help="MIN:MAX[:FACTOR] (x2 default) or a list: 8B:256MiB, 1K,1M.")] = "8B:64MiB",
    ops: Annotated[str, typer.Option(help="Comma-separated: " + "all_reduce,all_gather,reduce_scatter,broadcast,all_to_all,sendrecv")] = "all_reduce,all_gather,reduce_scatter,broadcast,all_to_all,sendrecv",
    backend: Annotated[Optional[str], typer.Option(help="gloo or nccl (default: nccl with CUDA, else gloo).")] = None,
    iters: Annotated[int, typer.Option(help="Timed iterations per size, at most.")] = 20,
    budget: Annotated[float, typer.Option(help="Seconds per (op, size), at most: fewer iterations for large sizes.")] = 2.0,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Result JSON (default: ./commprof-runs/probe-STAMP.json).")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="terminal or json.")] = None,
) -> int:
    """Measure what the fabric can do: nccl-tests-style sweep with the job's backend."""
    from commprof.cli.probe import probe_command
    return probe_command(list(launcher or []), nproc, sizes, ops, backend, iters, budget, output, fmt)


@app.command(short_help="Project the step time of a run under changes you choose.")
def whatif(
    run: Annotated[Optional[str], typer.Argument(help="Run directory (default: the latest).")] = None,
    bandwidth: Annotated[Optional[str], typer.Option(help="Link bandwidth factor, e.g. x2.")] = None,
    bytes_: Annotated[Optional[str], typer.Option("--bytes", help="Bytes divisor, e.g. /2 (fp16/bf16 compression).")] = None,
    sync_every: Annotated[int, typer.Option(help="Synchronize every k steps (gradient accumulation).")] = 1,
    overlap: Annotated[bool, typer.Option("--overlap", help="Perfect overlap: no exposed communication.")] = False,
    no_straggler: Annotated[bool, typer.Option("--no-straggler", help="The significant straggler arrives on time.")] = False,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="terminal or json.")] = None,
    warmup: Annotated[int, typer.Option(help="Steps of each rank left out of the medians.")] = 2,
    fix: Annotated[Optional[str], typer.Option("--fix", help="A fix of `commprof try` (e.g. powersgd:4), projected from the run alone.")] = None,
) -> int:
    """Project the step time of a run under changes you choose (a custom what-if scenario)."""
    from commprof.cli.whatif import whatif_command
    return whatif_command(run, bandwidth, bytes_, sync_every, overlap, no_straggler, fmt, warmup, fix)


@app.command(short_help="Run the bundled DDP demo and print its report.")
def demo(
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory (default: a new one under ./commprof-runs/).")] = None,
    steps: Annotated[int, typer.Option(help="Training steps of the demo job.")] = 100,
    nproc: Annotated[int, typer.Option(help="Ranks (processes) on this machine.")] = 2,
) -> int:
    """Run the bundled DDP demo (gloo, CPU) under `commprof run` and print its report."""
    from commprof.cli.demo import demo_command
    return demo_command(out, steps, nproc)


@app.command("build-native", short_help="Build the native capture kernel now (cached).")
def build_native(
    verbose: Annotated[bool, typer.Option(help="Show the compiler's output.")] = False,
) -> int:
    """Prebuild the C++ capture kernel into its cache (COMMPROF_NATIVE_CACHE, else
    ~/.cache/commprof/native); prints the path and the build time."""
    from commprof.cli.native import build_native_command
    return build_native_command(verbose)


@app.command(short_help="Say which capture path works here, and why.")
def doctor() -> int:
    """Check the native capture kernel (builds it if needed) and say which path runs."""
    from commprof.cli.native import doctor_command
    return doctor_command()
