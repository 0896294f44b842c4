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
) -> int:
    """Run COMMAND (e.g. `torchrun ... train.py`) with every collective of every worker captured."""
    from commprof.cli.run import run_command
    from commprof.launch.supervisor import die_like
    returncode, _ = run_command(list(command), out=out, flush_interval=flush_interval, quiet=quiet,
                                hang_timeout=hang_timeout, kill_on_hang=kill_on_hang,
                                sample_hz=sample_hz)
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


@app.command()
def demo(
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory (default: a new one under ./commprof-runs/).")] = None,
    steps: Annotated[int, typer.Option(help="Training steps of the demo job.")] = 100,
    nproc: Annotated[int, typer.Option(help="Ranks (processes) on this machine.")] = 2,
) -> int:
    """Run the bundled DDP demo (gloo, CPU) under `commprof run` and print its report."""
    from commprof.cli.demo import demo_command
    return demo_command(out, steps, nproc)
