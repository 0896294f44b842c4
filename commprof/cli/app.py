"""The typer application: one function per command, thin wrappers over the modules that do the work."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="commprof: how much does communication slow your distributed training?")


@app.callback()
def _root() -> None:
    """commprof: how much does communication slow your distributed training?"""


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    command: Annotated[list[str], typer.Argument(help="The job to run, after `--`.")],
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory (default: a new one under ./commprof-runs/).")] = None,
    flush_interval: Annotated[float, typer.Option(help="Seconds between capture flushes in each worker.")] = 1.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No commprof messages on stderr.")] = False,
    hang_timeout: Annotated[Optional[float], typer.Option(help="Report a hang when a collective stays pending this many seconds (writes RUN/hang.json).")] = None,
    kill_on_hang: Annotated[bool, typer.Option(help="Stop the job (SIGTERM, then SIGKILL) once a hang is reported.")] = False,
    sample_hz: Annotated[float, typer.Option(help="Link counter samples per second on this node (0: off).")] = 10.0,
    probe: Annotated[bool, typer.Option(help="Run `commprof probe` with the job's torchrun launcher first (RUN/probe.json).")] = False,
    probe_sizes: Annotated[str, typer.Option(help="Sizes for --probe.")] = "8B:16MiB:4",
) -> int:
    """Run COMMAND (e.g. `torchrun ... train.py`) with every collective of every worker captured."""
    from commprof.cli.run import run_command
    from commprof.launch.supervisor import die_like
    returncode, _ = run_command(list(command), out=out, flush_interval=flush_interval, quiet=quiet,
                                hang_timeout=hang_timeout, kill_on_hang=kill_on_hang,
                                sample_hz=sample_hz, probe=probe, probe_sizes=probe_sizes)
    return die_like(returncode)


@app.command()
def report(
    run_dir: Annotated[Optional[str], typer.Argument(help="Run directory (default: the latest under ./commprof-runs), or a saved JSON report to render again.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="terminal or json (default: from -o's suffix, else terminal).")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    warmup: Annotated[int, typer.Option(help="Steps of each rank left out of the medians.")] = 2,
    width: Annotated[Optional[int], typer.Option(help="Terminal report width.")] = None,
) -> int:
    """Summarize a run: the three KPIs, per-op and per-rank tables, a verdict."""
    from commprof.cli.report import report_command
    return report_command(run_dir, fmt, output, warmup, width)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
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


@app.command()
def demo(
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory (default: a new one under ./commprof-runs/).")] = None,
    steps: Annotated[int, typer.Option(help="Training steps of the demo job.")] = 100,
    nproc: Annotated[int, typer.Option(help="Ranks (processes) on this machine.")] = 2,
) -> int:
    """Run the bundled DDP demo (gloo, CPU) under `commprof run` and print its report."""
    from commprof.cli.demo import demo_command
    return demo_command(out, steps, nproc)
