"""``commprof report [RUN_DIR]``"""
from __future__ import annotations

import os
import sys

from commprof.errors import UsageError


def build_document(run_dir, warmup: int) -> dict:
    """Load, analyse and build the report document of a run."""
    from commprof.analysis.load import open_run
    from commprof.analysis.summary import summarize
    from commprof.report.document import build
    if warmup < 0:
        raise UsageError(f"--warmup {warmup}: must be >= 0")
    return build(summarize(open_run(run_dir), warmup=warmup))


def report_command(run_dir, fmt: str | None, output: str | None, warmup: int,
                   width: int | None) -> int:
    """``run_dir``: None (the latest run), one path, or a list (directories of one run, merged)."""
    from commprof.report.renderers import choose
    renderer = choose(fmt, output)
    dirs = [run_dir] if isinstance(run_dir, str) else list(run_dir or [])
    saved = len(dirs) == 1 and dirs[0].endswith(".json") and not os.path.isdir(dirs[0])
    target = dirs if len(dirs) > 1 else (dirs[0] if dirs else None)
    if hasattr(renderer, "render_run"):  # the trace: every record, straight from the run
        if saved:
            renderer.render(None)  # raises the explanation
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
