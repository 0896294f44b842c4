"""Hostile inputs for every reader (issue 26 item 8), and the harness that runs them.

Run as a script (``python tests/reader_cases.py DIR``) it builds the cases under DIR and runs
``commprof report`` on each *in one child process* (fast: one import), under an address-space
limit (:data:`MEMORY_LIMIT`) and a per-case time limit (:data:`CASE_SECONDS`, SIGALRM), through
:func:`commprof.cli.main`, the one place errors become exit codes.  It prints one JSON line per
case: exit code, stderr, seconds, and whether a traceback or a MemoryError escaped.
``tests/integration/test_reader_totality.py`` starts it and checks each line.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import resource
import signal
import struct
import sys
import time
import zlib
from pathlib import Path

MEMORY_LIMIT = 3 << 30  # address space of the child (numpy+pandas+pyarrow map ~1.5 GiB)
CASE_SECONDS = 20  # one case (a synthetic 2-rank run reports in < 2 s)
DEEP = 1000  # nesting of the deep-JSON cases


def _capture_bytes(header: bytes, frames: bytes = b"") -> bytes:
    """A capture file with ``header`` (raw JSON bytes: it may be anything) and ``frames``."""
    from commprof.format import schema
    return (schema.HEADER_PREFIX.pack(schema.MAGIC, schema.SCHEMA_VERSION, len(header)) + header
            + zlib.crc32(header).to_bytes(4, "little") + frames)


def _base_run(root: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import synthetic
    return synthetic.write_run(root / "base", [synthetic.periodic_rank(0), synthetic.periodic_rank(1)])


def _copy_run(base: Path, dest: Path) -> Path:
    import shutil
    shutil.copytree(base, dest, symlinks=True)
    return dest


def _header_of(path: Path) -> dict:
    from commprof.format import reader
    return reader.read_header(path)


def _frames_of(path: Path) -> bytes:
    """The frames of a stream (v2) capture after its header."""
    from commprof.format import schema
    data = path.read_bytes()
    hlen = schema.HEADER_PREFIX.unpack_from(data, 0)[2]
    return data[schema.HEADER_PREFIX.size + hlen + 4:]


def _coll_frame(**fields) -> bytes:
    """One CRC-valid COLL frame of one record (the given fields, others plausible)."""
    from commprof.format import schema
    from commprof.format.writer import encode_batch
    row = dict(id=5, op=1, group=0, seq=5, dtype=1, flags=0, peer=-1, in_numel=1, in_bytes=4,
               out_numel=1, out_bytes=4, thread=1, t_issue=1_000, t_return=2_000)
    row.update(fields)
    return encode_batch(schema.KIND_COLL, [tuple(row[n] for n, _ in schema.COLL_FIELDS)])


def build(root: Path) -> list[tuple[str, list[str], str]]:
    """Every case: (name, argv of ``commprof``, expectation).  Expectations: ``"refused"`` — exit
    2 and one ``commprof: error:`` line; ``"read"`` — exit 0 or a refusal, never a traceback."""
    from commprof.format import layout
    base = _base_run(root)
    cases: list[tuple[str, list[str], str]] = []
    cap0 = sorted(layout.capture_paths(base))[0]
    header = _header_of(cap0)
    frames = _frames_of(cap0)

    def run(name: str, how: str = "refused") -> Path:
        d = _copy_run(base, root / name)
        cases.append((name, ["report", str(d), "--format", "json"], how))
        return d

    def deep(n: int = DEEP) -> bytes:
        return b"[" * n + b"]" * n

    run("base_copy", "read")  # unchanged: reported whole
    # -- manifest ---------------------------------------------------------------------------
    for name, make in {
        "manifest_fifo": lambda p: os.mkfifo(p),
        "manifest_dir": lambda p: p.mkdir(),
        "manifest_list": lambda p: p.write_text("[]"),
        "manifest_not_utf8": lambda p: p.write_bytes(b'{"status": "\xff\xfe"}'),
        "manifest_deep": lambda p: p.write_bytes(b'{"x": ' + deep() + b"}"),
        "manifest_dev_zero": lambda p: p.symlink_to("/dev/zero"),
        "manifest_urandom": lambda p: p.symlink_to("/dev/urandom"),
        "manifest_huge_number": lambda p: p.write_text('{"status": 1e400}'),
    }.items():
        d = run(name)
        m = layout.manifest_path(d)
        m.unlink()
        make(m)
    # -- hang.json --------------------------------------------------------------------------
    for name, make in {
        "hang_fifo": lambda p: os.mkfifo(p),
        "hang_dev_zero": lambda p: p.symlink_to("/dev/zero"),
        "hang_deep": lambda p: p.write_bytes(b'{"schema": "commprof.hang/1", "x": ' + deep() + b"}"),
        "hang_infinity": lambda p: p.write_text('{"schema": "commprof.hang/1", "blocked": [], '
                                                '"ranks": [], "t": Infinity}'),
        "hang_directory": lambda p: p.mkdir(),
    }.items():
        make(layout.hang_path(run(name)))
    # -- captures ---------------------------------------------------------------------------
    bad_headers = {
        "header_world_size_text": dict(header, world_size="8"),
        "header_pid_text": dict(header, pid="x"),
        "header_host_list": dict(header, host=["a"]),
        "header_world_size_1e9": dict(header, world_size=10**9),
        "header_world_size_float": dict(header, world_size=1e12),
    }
    bad_headers["header_clock_null"] = dict(header, clock=None)  # unknown: read, not refused
    for name, h in bad_headers.items():
        d = run(name, "read" if name == "header_clock_null" else "refused")
        (d / "ranks" / cap0.name).write_bytes(_capture_bytes(json.dumps(h).encode(), frames))
    for name, raw in {"header_deep": b'{"rank": 0, "x": ' + deep() + b"}",
                      "header_1e400": b'{"rank": 0, "world_size": 1e400}',
                      "header_big_int": b'{"rank": 18446744073709551617}'}.items():
        d = run(name)
        (d / "ranks" / cap0.name).write_bytes(_capture_bytes(raw, frames))
    for name, fields in {"record_op_60000": dict(op=60000), "record_seq_2_40": dict(id=1 << 41, seq=1 << 40),
                         "record_seq_negative": dict(seq=-5), "record_dtype_250": dict(dtype=250)}.items():
        d = run(name, "read")
        (d / "ranks" / cap0.name).write_bytes(_capture_bytes(json.dumps(header).encode(),
                                                             frames + _coll_frame(**fields)))
    d = run("capture_fifo")
    (d / "ranks" / cap0.name).unlink()
    os.mkfifo(d / "ranks" / cap0.name)
    d = run("capture_dev_zero")
    (d / "ranks" / cap0.name).unlink()
    (d / "ranks" / cap0.name).symlink_to("/dev/zero")
    # -- files beside the captures: sampler, node summary, probe ------------------------------
    for name, (where, fname) in {"sampler_fifo": ("nodes", "h.p1.cps"),
                                 "summary_fifo": ("summaries", "h.cpsum"),
                                 "probe_fifo": (".", "probe.json")}.items():
        d = run(name, "read")
        (d / where).mkdir(exist_ok=True)
        os.mkfifo(d / where / fname)
    for name, (where, fname, target) in {"sampler_urandom": ("nodes", "h.p1.cps", "/dev/urandom"),
                                         "summary_dev_zero": ("summaries", "h.cpsum", "/dev/zero")}.items():
        d = run(name, "read")
        (d / where).mkdir(exist_ok=True)
        (d / where / fname).symlink_to(target)
    # -- node summaries edited and re-sealed (CRC-valid): the captures are read instead ------
    for name, edit in {"summary_host_list": ("process", "host", [1, 2]),
                       "summary_ops_number": (None, "ops", -1),
                       "summary_backends_int": (None, "backends", 2**31),
                       "summary_rank_text": ("process", "self_record_ns", "x")}.items():
        d = run(name, "read")
        _edit_summary(d, header.get("host"), edit)
    # -- saved reports ----------------------------------------------------------------------
    for name, text in {"saved_deep": b'{"schema": "commprof.report/1", "x": ' + deep() + b"}",
                       "saved_1e400": b'{"schema": "commprof.report/1", "kpis": {"x": 1e400}}',
                       "saved_not_utf8": b'{"schema": "\xff"}'}.items():
        p = root / f"{name}.json"
        p.write_bytes(text)
        cases.append((name, ["report", str(p)], "refused"))
    p = root / "saved_fifo.json"
    os.mkfifo(p)
    cases.append(("saved_fifo", ["report", str(p)], "refused"))
    # -- traces -----------------------------------------------------------------------------
    kernel = {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 10.0, "dur": 1.0,
              "args": {"correlation": 1, "device": 0, "stream": 7}}
    launch = {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
              "ts": 9.0, "dur": 0.5, "args": {"correlation": 1}}

    def trace(name: str, text: bytes, how: str = "refused") -> None:
        p = root / name
        p.write_bytes(text)
        cases.append((name, ["report", str(p), "--format", "json"], how))

    def doc(**top) -> bytes:
        return json.dumps({"traceEvents": [launch, kernel], **top}).encode()

    trace("rank-0.json", b'{"traceEvents": [' + json.dumps(launch).encode() + b", "
          + b'{"ph": "X", "args": ' + deep() + b"}]}", "read")
    trace("rank-1.json", doc().replace(b'"correlation": 1}}', b'"correlation": Infinity}}'))
    trace("rank-2.json", doc().replace(b'"correlation": 1}}', b'"correlation": 18446744073709551616}}'),
          "read")
    trace("rank-3.json", doc(distributedInfo={"rank": 10**30}), "read")
    trace("rank-4.json", doc(baseTimeNanoseconds=10**40), "read")
    trace("rank-5.json", doc().replace(b'"ts": 10.0', b'"ts": 1e400'), "read")
    trace("rank-6.json", json.dumps({"traceEvents": [launch, dict(kernel, args=dict(
        kernel["args"], **{"External id": 2**63}))], "distributedInfo": {"rank": 6,
                                                                          "world_size": 10**9}}).encode(), "read")
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=9) as gz:
        gz.write(b'{"traceEvents": [')
        chunk = b" " * (1 << 20)
        for _ in range(256):  # 256 MiB of blanks: ~250 kB compressed (ratio ~1000)
            gz.write(chunk)
        gz.write(b"]}")
    trace("rank-7.json.gz", bomb.getvalue())
    p = root / "rank-8.json.gz"
    os.mkfifo(p)
    cases.append(("trace_fifo", ["report", str(p)], "refused"))
    p = root / "rank-9.json.gz"
    p.symlink_to("/dev/zero")
    cases.append(("trace_dev_zero", ["report", str(p)], "refused"))
    return cases


def _edit_summary(run_dir: Path, host, edit) -> None:
    """Write ``run_dir``'s node summary, then change one value of rank 0's part and re-seal it."""
    from commprof.analysis.scale import node_summary, summary_file
    sp = node_summary.write_node_summary(run_dir, host=host, jobs=1).path
    data = sp.read_bytes()
    pos = len(summary_file.MAGIC)
    pos += 2 + struct.unpack_from("<H", data, pos)[0]
    head, payload = data[:pos], data[pos + 12:]
    count, p, sections = struct.unpack_from("<I", payload, 0)[0], 4, []
    for _ in range(count):
        n = struct.unpack_from("<Q", payload, p)[0]
        sections.append(payload[p + 8:p + 8 + n])
        p += 8 + n
    doc = json.loads(sections[0])
    where, key, value = edit
    part = doc["results"][0]["part"]
    (part[where] if where else part)[key] = value
    sections[0] = json.dumps(doc).encode()
    body = struct.pack("<I", len(sections)) + b"".join(struct.pack("<Q", len(x)) + x for x in sections)
    sp.write_bytes(head + struct.pack("<QI", len(body), zlib.crc32(body)) + body)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_cases(cases) -> None:
    """Each case through commprof.cli.main in this process: one JSON line per case."""
    from commprof.cli import main
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _alarm)
    for name, argv, how in cases:
        err, out = io.StringIO(), io.StringIO()
        t = time.monotonic()
        escaped = None
        signal.alarm(CASE_SECONDS)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(argv)
        except _Timeout:
            code, escaped = None, "timeout"
        except MemoryError:
            code, escaped = None, "MemoryError"
        except BaseException as exc:  # noqa: BLE001 - the harness reports what escaped
            code, escaped = None, f"{type(exc).__name__}: {exc}"[:300]
        finally:
            signal.alarm(0)
        print(json.dumps({"name": name, "how": how, "code": code, "stderr": err.getvalue()[-2000:],
                          "dropped_note": "out-of-range fields" in out.getvalue(),
                          "summary_note": "its captures were read instead" in out.getvalue(),
                          "stdout_head": out.getvalue()[:3000],
                          "seconds": round(time.monotonic() - t, 2), "escaped": escaped}), flush=True)


if __name__ == "__main__":
    root = Path(sys.argv[1])
    run_cases(build(root))
