"""The capture format: writer → reader round trips, torn tails, corruption and bad headers."""
from __future__ import annotations

import json
import os
import random
import struct
import zlib

import numpy as np
import pytest

from commprof.errors import CaptureFormatError, TruncatedCaptureError
from commprof.format import reader, schema
from commprof.format.reader import read_capture
from commprof.format.writer import CaptureWriter, encode_batch, encode_frame, encode_header, encode_json

# Value ranges of every struct code the schema uses (independent of the reader's numpy mapping).
_RANGES = {"q": (-2**63, 2**63 - 1), "Q": (0, 2**64 - 1), "i": (-2**31, 2**31 - 1),
           "I": (0, 2**32 - 1), "H": (0, 2**16 - 1), "B": (0, 2**8 - 1), "d": (-1e300, 1e300)}
_NP = {"q": "<i8", "Q": "<u8", "i": "<i4", "I": "<u4", "H": "<u2", "B": "u1", "d": "<f8"}
ARRAY_NAMES = {schema.KIND_COLL: "coll", schema.KIND_DONE: "done", schema.KIND_WAIT: "wait",
               schema.KIND_MARK: "mark", schema.KIND_SPAN: "span", schema.KIND_SAMPLE: "sample",
               schema.KIND_GPU: "gpu"}
META = {"rank": 3, "world_size": 8, "host": "node-a", "pid": 4242, "restart": 1,
        "argv": ["train.py", "--lr", "0.1"], "clock": {"wall_ns": 1, "mono_ns": 2}}


def random_rows(kind: int, count: int, rng: random.Random) -> list[tuple]:
    """Rows of ``kind``; the first two rows hold each field's minimum and maximum."""
    fields = schema.FIXED_KINDS[kind]
    rows = [tuple(_RANGES[code][0] for _, code in fields),
            tuple(_RANGES[code][1] for _, code in fields)]
    for _ in range(max(count - 2, 0)):
        rows.append(tuple(rng.uniform(*_RANGES[code]) if code == "d" else rng.randint(*_RANGES[code])
                          for _, code in fields))
    return rows[:count]


def assert_rows(arr: np.ndarray, kind: int, rows: list[tuple]) -> None:
    fields = schema.FIXED_KINDS[kind]
    assert arr.dtype.names == tuple(name for name, _ in fields)
    assert len(arr) == len(rows)
    for j, (name, code) in enumerate(fields):
        expected = np.array([r[j] for r in rows], dtype=_NP[code])
        np.testing.assert_array_equal(arr[name], expected, err_msg=f"{ARRAY_NAMES[kind]}.{name}")


def build_file(path, plan, trailer: dict | None = None) -> list[int]:
    """Write ``plan`` (a list of ("batch", kind, rows) / ("json", obj)) through CaptureWriter.

    Returns the byte offset at which each frame starts (and, last, the file's length).
    """
    w = CaptureWriter(str(path), META)
    starts = []
    for item in plan:
        frame = encode_batch(item[1], item[2]) if item[0] == "batch" else encode_json(item[1])
        starts.append(w.bytes_written if w.bytes_written else len(encode_header(META)))
        w.write(frame)
    if trailer is not None:
        starts.append(w.bytes_written)
        w.close(trailer)
    else:
        w.close(None)
    starts.append(path.stat().st_size)
    return starts


def expected_after(plan) -> dict:
    """What the reader should return for the frames of ``plan``."""
    rows = {k: [] for k in schema.FIXED_KINDS}
    groups, events = [], []
    for item in plan:
        if item[0] == "batch":
            rows[item[1]].extend(item[2])
        elif item[1].get("type") == "group":
            groups.append(item[1])
        else:
            events.append(item[1])
    return {"rows": rows, "groups": groups, "events": events}


def check_capture(cap, exp) -> None:
    assert set(cap.arrays) == set(ARRAY_NAMES.values())
    for kind in schema.FIXED_KINDS:
        assert_rows(cap.arrays[ARRAY_NAMES[kind]], kind, exp["rows"][kind])
    assert cap.groups == exp["groups"]
    assert cap.events == exp["events"]


def full_plan(rng: random.Random, frames_per_kind: int = 2) -> list:
    plan = [("json", {"type": "group", "id": 0, "name": "0", "size": 8, "backend": "gloo",
                      "ranks": list(range(8))})]
    for rep in range(frames_per_kind):
        for kind in schema.FIXED_KINDS:
            plan.append(("batch", kind, random_rows(kind, 3 + rep, rng)))
        plan.append(("json", {"type": "degraded", "where": f"hook{rep}", "count": rep + 1,
                              "error": "RuntimeError: x"}))
    plan.append(("json", {"type": "group", "id": 1, "name": "1", "size": 2, "backend": "gloo",
                          "ranks": [0, 1], "desc": "ünïcode ✓"}))
    return plan


# -- round trip -------------------------------------------------------------------------------

def test_fixed_kinds_are_the_record_arrays():
    assert set(schema.FIXED_KINDS) == set(ARRAY_NAMES)
    assert set(reader.KIND_NAMES.values()) == set(ARRAY_NAMES.values())
    for kind, fields in schema.FIXED_KINDS.items():
        assert reader.DTYPES[kind].itemsize == schema.struct_for(fields).size


@pytest.mark.parametrize("kind", sorted(schema.FIXED_KINDS), ids=lambda k: ARRAY_NAMES[k])
def test_round_trip_each_record_kind(tmp_path, kind):
    rng = random.Random(kind)
    rows_a, rows_b = random_rows(kind, 7, rng), random_rows(kind, 5, rng)
    path = tmp_path / "one.cpf"
    w = CaptureWriter(str(path), META)
    w.write(encode_batch(kind, rows_a))
    w.write(encode_batch(kind, rows_b))  # two frames of one kind are joined in order
    w.close({"reason": "exit", "records": 12})
    cap = read_capture(path)
    assert cap.damage is None
    assert cap.complete
    assert cap.header == META
    assert cap.rank == 3
    assert cap.trailer == {"type": "trailer", "reason": "exit", "records": 12}
    assert_rows(cap.arrays[ARRAY_NAMES[kind]], kind, rows_a + rows_b)
    for other in schema.FIXED_KINDS:
        if other != kind:
            arr = cap.arrays[ARRAY_NAMES[other]]
            assert len(arr) == 0
            assert arr.dtype.names == tuple(n for n, _ in schema.FIXED_KINDS[other])


def test_round_trip_everything_interleaved(tmp_path):
    plan = full_plan(random.Random(1))
    path = tmp_path / "all.cpf"
    build_file(path, plan, trailer={"reason": "SIGTERM", "records": 99})
    cap = read_capture(path)
    assert cap.damage is None and cap.complete
    check_capture(cap, expected_after(plan))
    assert cap.trailer["reason"] == "SIGTERM"
    assert cap.groups[1]["desc"] == "ünïcode ✓"


def test_empty_batch_frame_and_trailer_only_file(tmp_path):
    path = tmp_path / "t.cpf"
    w = CaptureWriter(str(path), META)
    w.write(encode_batch(schema.KIND_COLL, []))
    w.close({"reason": "exit"})
    cap = read_capture(path)
    assert cap.damage is None and cap.complete
    assert all(len(a) == 0 for a in cap.arrays.values())


def test_writer_does_not_create_a_file_until_written(tmp_path):
    path = tmp_path / "never.cpf"
    w = CaptureWriter(str(path), META)
    w.write(b"")
    w.close(None)
    assert not path.exists()


def test_writer_after_close_writes_nothing(tmp_path):
    path = tmp_path / "c.cpf"
    w = CaptureWriter(str(path), META)
    w.write(encode_batch(schema.KIND_MARK, [(1, 2, 3)]))
    w.close({"reason": "exit"})
    size = path.stat().st_size
    w.write(encode_batch(schema.KIND_MARK, [(1, 2, 3)]))
    w.close({"reason": "again"})
    assert path.stat().st_size == size
    assert read_capture(path).trailer["reason"] == "exit"


def test_missing_trailer_means_incomplete(tmp_path):
    plan = full_plan(random.Random(2))
    path = tmp_path / "nt.cpf"
    build_file(path, plan, trailer=None)
    cap = read_capture(path)
    assert cap.damage is None
    assert cap.trailer is None
    assert cap.complete is False
    check_capture(cap, expected_after(plan))


# -- torn tails -------------------------------------------------------------------------------

LAST_FRAME_KINDS = [*sorted(schema.FIXED_KINDS), "json", "trailer"]


@pytest.mark.parametrize("last", LAST_FRAME_KINDS,
                         ids=lambda k: ARRAY_NAMES.get(k, k) if isinstance(k, int) else k)
def test_torn_tail_at_every_byte_of_the_last_frame(tmp_path, last):
    rng = random.Random(str(last))
    plan = full_plan(rng, frames_per_kind=1)
    if last == "trailer":
        src = tmp_path / "src.cpf"
        starts = build_file(src, plan, trailer={"reason": "exit", "records": 5})
    else:
        tail = (("batch", last, random_rows(last, 4, rng)) if isinstance(last, int)
                else ("json", {"type": "group", "id": 7, "size": 4, "ranks": [0, 1, 2, 3]}))
        src = tmp_path / "src.cpf"
        starts = build_file(src, plan + [tail], trailer=None)
    data = src.read_bytes()
    begin, end = starts[-2], starts[-1]
    assert end == len(data) and end - begin > schema.FRAME_HEADER.size
    exp = expected_after(plan)
    cut = tmp_path / "cut.cpf"
    # Cut exactly at the frame boundary: a clean (if trailer-less) file.
    cut.write_bytes(data[:begin])
    cap = read_capture(cut)
    assert cap.damage is None and not cap.complete
    check_capture(cap, exp)
    cut.write_bytes(data)
    for offset in range(end - 1, begin, -1):  # shrink the file in place, byte by byte
        os.truncate(cut, offset)
        cap = read_capture(cut)  # never raises
        assert cap.damage, f"no damage reported for a cut at byte {offset}"
        assert str(begin) in cap.damage, (offset, cap.damage)
        assert not cap.complete
        check_capture(cap, exp)


def test_flipped_payload_byte_is_a_checksum_error_and_keeps_earlier_frames(tmp_path):
    rng = random.Random(5)
    plan = full_plan(rng, frames_per_kind=2)
    src = tmp_path / "src.cpf"
    starts = build_file(src, plan, trailer={"reason": "exit"})
    data = src.read_bytes()
    target = 4  # a fixed-size batch frame in the middle of the file
    assert plan[target][0] == "batch"
    begin, end = starts[target], starts[target + 1]
    exp = expected_after(plan[:target])
    bad = tmp_path / "bad.cpf"
    bad.write_bytes(data)
    fd = os.open(bad, os.O_WRONLY)
    try:
        for offset in range(begin + schema.FRAME_HEADER.size, end):
            os.pwrite(fd, bytes([data[offset] ^ 0x5A]), offset)
            cap = read_capture(bad)
            os.pwrite(fd, data[offset:offset + 1], offset)
            assert cap.damage and "checksum" in cap.damage, (offset, cap.damage)
            assert str(begin) in cap.damage
            assert not cap.complete  # the trailer after the damage is not trusted
            check_capture(cap, exp)
    finally:
        os.close(fd)


def test_flipped_byte_in_a_json_payload_is_a_checksum_error(tmp_path):
    plan = full_plan(random.Random(6), frames_per_kind=1)
    src = tmp_path / "src.cpf"
    starts = build_file(src, plan, trailer={"reason": "exit"})
    data = bytearray(src.read_bytes())
    begin = starts[-2]  # the trailer frame
    data[begin + schema.FRAME_HEADER.size + 3] ^= 0x01
    src.write_bytes(bytes(data))
    cap = read_capture(src)
    assert cap.damage and "checksum" in cap.damage
    assert not cap.complete
    check_capture(cap, expected_after(plan))


def test_garbage_frame_kind_is_damage_not_an_exception(tmp_path):
    plan = full_plan(random.Random(7), frames_per_kind=1)
    src = tmp_path / "src.cpf"
    build_file(src, plan, trailer=None)
    with open(src, "ab") as fh:
        fh.write(encode_frame(200, b"\x00" * 10))
    cap = read_capture(src)
    assert cap.damage and "kind" in cap.damage
    check_capture(cap, expected_after(plan))


def test_partial_record_frame_is_damage(tmp_path):
    plan = full_plan(random.Random(8), frames_per_kind=1)
    src = tmp_path / "src.cpf"
    build_file(src, plan, trailer=None)
    rec = encode_batch(schema.KIND_DONE, [(1, 2, 3)])
    with open(src, "ab") as fh:
        payload = rec[schema.FRAME_HEADER.size:] + b"\x00"  # one byte too many for DONE records
        fh.write(encode_frame(schema.KIND_DONE, payload))
    cap = read_capture(src)
    assert cap.damage and "partial" in cap.damage
    check_capture(cap, expected_after(plan))


def test_corrupt_kind_byte_turning_a_batch_into_json_is_damage(tmp_path):
    plan = full_plan(random.Random(9), frames_per_kind=1)
    src = tmp_path / "src.cpf"
    starts = build_file(src, plan + [("batch", schema.KIND_COLL,
                                      random_rows(schema.KIND_COLL, 3, random.Random(1)))])
    data = bytearray(src.read_bytes())
    data[starts[-2]] = schema.KIND_JSON
    src.write_bytes(bytes(data))
    cap = read_capture(src)  # raises today
    assert cap.damage
    check_capture(cap, expected_after(plan))


# -- not a capture ----------------------------------------------------------------------------

def _assert_format_error(path, *words):
    with pytest.raises(CaptureFormatError) as info:
        read_capture(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    for w in words:
        assert w in str(info.value)
    return info.value


def test_empty_file(tmp_path):
    path = tmp_path / "empty.cpf"
    path.write_bytes(b"")
    err = _assert_format_error(path, "empty file")
    assert isinstance(err, TruncatedCaptureError)  # `commprof report` leaves it out with a note


def test_missing_file(tmp_path):
    _assert_format_error(tmp_path / "nope.cpf")


def test_bad_magic(tmp_path):
    path = tmp_path / "bad.cpf"
    good = encode_header(META) + encode_batch(schema.KIND_MARK, [(1, 2, 3)])
    path.write_bytes(b"NOTPROF!" + good[8:])
    _assert_format_error(path, "magic")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    _assert_format_error(path, "magic")


def test_truncated_header_at_every_byte(tmp_path):
    header = encode_header(META)
    path = tmp_path / "short.cpf"
    path.write_bytes(header)
    for n in range(len(header) - 1, -1, -1):
        os.truncate(path, n)
        _assert_format_error(path)
    path.write_bytes(header)
    cap = read_capture(path)
    assert cap.header == META and cap.damage is None and not cap.complete


def test_corrupt_header_json(tmp_path):
    header = bytearray(encode_header(META))
    header[schema.HEADER_PREFIX.size + 2] ^= 0x20
    path = tmp_path / "hdr.cpf"
    path.write_bytes(bytes(header))
    _assert_format_error(path, "header")


def test_newer_schema_version_asks_for_an_upgrade(tmp_path):
    body = json.dumps(META).encode()
    newer = (schema.HEADER_PREFIX.pack(schema.MAGIC, schema.SCHEMA_VERSION + 1, len(body)) + body
             + zlib.crc32(body).to_bytes(4, "little"))
    path = tmp_path / "future.cpf"
    path.write_bytes(newer + encode_batch(schema.KIND_MARK, [(1, 2, 3)]))
    err = _assert_format_error(path, "upgrade")
    assert str(schema.SCHEMA_VERSION + 1) in str(err)


def test_header_layout_is_as_documented():
    body = json.dumps(META, sort_keys=True).encode()
    h = encode_header(META)
    magic, version, n = struct.unpack_from("<8sHI", h, 0)
    assert (magic, version, n) == (b"COMMPROF", schema.SCHEMA_VERSION, len(body))
    assert h[14:14 + n] == body
    assert int.from_bytes(h[14 + n:], "little") == zlib.crc32(body)
    f = encode_json({"type": "event", "x": 1})
    kind, length, crc = struct.unpack_from("<BII", f, 0)
    assert kind == schema.KIND_JSON and length == len(f) - 9
    assert crc == zlib.crc32(f[9:], zlib.crc32(f[:5]))  # v2: kind and length are covered too


def test_version_1_files_are_still_read(tmp_path):
    """v1 frames carried crc32(payload) only; readers of v2 still read them."""
    body = json.dumps(META).encode()
    payload = struct.pack("<Bqq", 1, 2, 3)
    v1 = (schema.HEADER_PREFIX.pack(schema.MAGIC, 1, len(body)) + body
          + zlib.crc32(body).to_bytes(4, "little")
          + struct.pack("<BII", schema.KIND_MARK, len(payload), zlib.crc32(payload)) + payload)
    path = tmp_path / "v1.cpf"
    path.write_bytes(v1)
    cap = read_capture(path)
    assert cap.damage is None and cap.arrays["mark"].tolist() == [(1, 2, 3)]
