"""``commprof report [RUN_DIR]``"""
from __future__ import annotations

import os
import sys

from commprof.errors import UsageError


def summarize_run(run_dir, warmup: int):
    """Load and analyse a run (:class:`commprof.analysis.summary.Summary`)."""
    from commprof.analysis.load import open_run
    from commprof.analysis.summary import summarize
    if warmup < 0:
        raise UsageError(f"--warmup {warmup}: must be >= 0")
    return summarize(open_run(run_dir), warmup=warmup)


def build_document(run_dir, warmup: int) -> dict:
    """Load, analyse and build the report document of a run."""
    from commprof.report.document import build
    return build(summarize_run(run_dir, warmup))


def report_command(run_dir, fmt: str | None, output: str | None, warmup: int,
                   width: int | None) -> int:
    """``run_dir``: None (the latest run), one path, or a list (directories of one run, merged)."""
    from commprof.report.renderers import choose, is_exporter
    renderer = choose(fmt, output)
    dirs = [run_dir] if isinstance(run_dir, str) else list(run_dir or [])
    saved = len(dirs) == 1 and dirs[0].endswith(".json") and not os.path.isdir(dirs[0])
    target = dirs if len(dirs) > 1 else (dirs[0] if dirs else None)
    if is_exporter(renderer):  # the trace: every record, straight from the run
        if saved:
            raise UsageError(f"the {renderer.name} is built from a run directory (every record), not "
                             f"from a saved report: `commprof report RUN_DIR -o run{renderer.suffixes[0]}`")
        return _emit(renderer.render_run(target), output)
    if saved:
        from commprof.report.document import load
        doc = load(dirs[0])  # a saved report, rendered again (e.g. as a table)
    else:
        doc = build_document(target, warmup)
    if output:
        color = False
    else:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    return _emit(renderer.render(doc, color=color, width=width), output)


def _emit(text: str, output: str | None) -> int:
    if output:
        try:
            with open(output, "w") as fh:
                fh.write(text)
        except OSError as exc:
            raise UsageError(f"{output}: cannot write: {exc.strerror}") from exc
        print(f"commprof: wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
