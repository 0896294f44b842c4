"""``commprof export RUN --parquet DIR``: a run's frames (docs/data.md) as Parquet files."""
from __future__ import annotations

import sys
from pathlib import Path

from commprof.errors import UsageError


def export_command(run_dir: str | None, parquet: str | None, warmup: int, force: bool,
                   quiet: bool) -> int:
    from commprof.analysis.outcome.frames import FRAMES, SCHEMA, Run
    from commprof.format import parquet as pq_out
    if not parquet:
        raise UsageError("--parquet DIR is required (the only export format so far)")
    if warmup < 0:
        raise UsageError(f"--warmup {warmup}: must be >= 0")
    out = Path(parquet)
    run = Run(run_dir, warmup=warmup)  # a bad run directory fails before DIR is touched
    if out.resolve() == run.path or run.path in out.resolve().parents:
        raise UsageError(f"{out}: inside the run directory {run.path}: choose another directory")
    pq_out._pyarrow()  # pyarrow missing: say so before anything is written
    pq_out.prepare_dir(out, force)
    def info() -> dict:  # after the frames: the notes then hold what reading found (damage)
        return {"run": str(run.path), "complete": run.complete, "warmup": warmup, "notes": run.notes}

    files = pq_out.write_frames([(name, lambda name=name: run.frame(name)) for name in FRAMES],
                                out, SCHEMA, info, progress=not quiet)
    for note in run.notes:  # the report says these too: the export must not hide them
        print(f"commprof: warning: {note}", file=sys.stderr)
    if not quiet:
        rows = len(run.calls)
        print(f"commprof: wrote {out} ({len(files)} Parquet files, {rows} calls"
              f"{'' if run.complete else '; the run was still being written'})", file=sys.stderr)
    return 0
