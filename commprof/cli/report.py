"""``commprof report [RUN_DIR]``"""
from __future__ import annotations

import os
import sys

from commprof.errors import UsageError


def build_document(run_dir: str | None, warmup: int) -> dict:
    """Load, analyse and build the report document of a run."""
    from commprof.analysis.load import open_run
    from commprof.analysis.summary import summarize
    from commprof.report.document import build
    if warmup < 0:
        raise UsageError(f"--warmup {warmup}: must be >= 0")
    return build(summarize(open_run(run_dir), warmup=warmup))


def report_command(run_dir: str | None, fmt: str | None, output: str | None, warmup: int,
                   width: int | None) -> int:
    from commprof.report.renderers import choose
    renderer = choose(fmt, output)
    if hasattr(renderer, "render_run"):  # the trace: every record, straight from the run
        if run_dir is not None and run_dir.endswith(".json") and not os.path.isdir(run_dir):
            renderer.render(None)  # raises the explanation
        return _emit(renderer.render_run(run_dir), output)
    if run_dir is not None and run_dir.endswith(".json") and not os.path.isdir(run_dir):
        from commprof.report.document import load
        doc = load(run_dir)  # a saved report, rendered again (e.g. as a table)
    else:
        doc = build_document(run_dir, warmup)
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
