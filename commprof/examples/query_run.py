"""The questions of docs/data.md, asked with DuckDB (in-process, no server) of one run.

    pip install duckdb
    python -m commprof.examples.query_run RUN                 # the frames of commprof.load_run
    python -m commprof.examples.query_run RUN --parquet DIR   # the files of `commprof export`

Both ways run the same SQL: on pandas frames DuckDB reads ``calls`` and ``steps`` in place; on an
export it reads the Parquet files (``calls`` as a hive-partitioned dataset: ``rank`` comes from
the ``rank=N`` directory names).
"""
from __future__ import annotations

import argparse
import sys

# The 10 slowest collectives across ranks (P2P left out: peer >= 0), issue to completion.
SLOWEST = """
SELECT rank, "group", seq, op, bytes, step, round(duration_ns / 1e6, 3) AS duration_ms
FROM calls
WHERE peer < 0
ORDER BY duration_ns DESC
LIMIT 10
"""

# One rank's exposed communication per measured step (the report's per-step figures).
EXPOSED = """
SELECT step, round(duration_s * 1e3, 3) AS step_ms, round(comm_s * 1e3, 3) AS comm_ms,
       round(exposed_s * 1e3, 3) AS exposed_ms, round(exposed_comm_fraction, 4) AS exposed_fraction
FROM steps
WHERE rank = $rank AND measured
ORDER BY step
"""

# Which rank arrives last at each step's all_reduce: every instance (same group, same sequence
# number on every member) on rank 0's clock; the step is rank 0's; per step the rank that was
# last most often, and by how much it was late (its issue minus the earliest one) at worst.
LAST_ARRIVAL = """
WITH instances AS (
    SELECT "group", seq,
           arg_max(rank, t_issue_r0) AS last_rank,
           max(t_issue_r0) - min(t_issue_r0) AS spread_ns,
           count(*) AS members,
           min(step) FILTER (WHERE rank = 0) AS step
    FROM calls
    WHERE op = 'all_reduce'
    GROUP BY "group", seq
)
SELECT step, mode(last_rank) AS last_rank, count(*) AS all_reduces,
       round(max(spread_ns) / 1e6, 3) AS max_lateness_ms
FROM instances
WHERE members = (SELECT count(DISTINCT rank) FROM calls) AND step IS NOT NULL
GROUP BY step
ORDER BY step
"""

QUERIES = {"slowest": SLOWEST, "exposed": EXPOSED, "last_arrival": LAST_ARRIVAL}


def connect(run_dir: str | None = None, parquet: str | None = None):
    """A DuckDB connection with ``calls`` and ``steps``: pandas frames, or an export's files."""
    import duckdb
    con = duckdb.connect()
    if parquet:
        con.execute(f"CREATE VIEW calls AS SELECT * FROM read_parquet('{parquet}/calls/*/*.parquet', "
                    "hive_partitioning = true)")
        con.execute(f"CREATE VIEW steps AS SELECT * FROM read_parquet('{parquet}/steps.parquet')")
    else:
        import commprof
        run = commprof.load_run(run_dir)
        con.register("calls", run.calls)
        con.register("steps", run.steps)
    return con


def run_queries(con, rank: int = 0) -> dict:
    """Each query's result as a pandas frame."""
    return {name: con.execute(sql.replace("$rank", str(int(rank)))).df()
            for name, sql in QUERIES.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", help="run directory (default: the latest)")
    parser.add_argument("--parquet", help="query this `commprof export --parquet` directory instead")
    parser.add_argument("--rank", type=int, default=0, help="the rank of the exposed-time query")
    args = parser.parse_args(argv)
    results = run_queries(connect(args.run, args.parquet), args.rank)
    for name, df in results.items():
        print(f"== {name} ({len(df)} rows)")
        print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
