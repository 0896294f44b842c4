"""Small helpers the lab runs *inside* a namespace (``ip netns exec NS python nstool.py ...``).

The VM has neither ``ping`` nor ``ethtool``, so these stand in for them:

* ``nstool.py ping ADDR COUNT [INTERVAL_S]`` -- ICMP echo over a raw socket
  (root); prints one JSON object ``{"rtts_ms": [...], "lost": N}``.  The first
  echo is a warm-up (ARP resolution) and is not reported.
* ``nstool.py offload IFACE on|off`` -- sets TSO, GSO and GRO with the legacy
  ``SIOCETHTOOL`` ioctls (``ETHTOOL_S{TSO,GSO,GRO}``), then reads them back and
  prints ``{"tso": bool, "gso": bool, "gro": bool}``.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import socket
import struct
import sys
import time

SIOCETHTOOL = 0x8946
ETHTOOL = {  # name: (get, set)
    "tso": (0x0000001E, 0x0000001F),
    "gso": (0x00000023, 0x00000024),
    "gro": (0x0000002B, 0x0000002C),
}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(addr: str, count: int, interval: float = 0.05, timeout: float = 2.0) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    rtts: list[float] = []
    lost = 0
    for seq in range(count + 1):  # seq 0 = warm-up
        payload = struct.pack("!d", time.monotonic()) + bytes(48)
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr + payload), ident, seq) + payload
        t0 = time.monotonic()
        sock.sendto(pkt, (addr, 0))
        got = None
        while got is None:
            left = t0 + timeout - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            data = sock.recv(65535)
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == 0 and rid == ident and rseq == seq:
                got = (time.monotonic() - t0) * 1000.0
        if seq:
            if got is None:
                lost += 1
            else:
                rtts.append(got)
        time.sleep(interval)
    return {"rtts_ms": rtts, "lost": lost}


def _ethtool(sock: socket.socket, iface: str, cmd: int, data: int = 0) -> int:
    buf = ctypes.create_string_buffer(struct.pack("II", cmd, data))
    ifr = struct.pack("16sP", iface.encode(), ctypes.addressof(buf)) + bytes(16)
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return struct.unpack("II", buf.raw[:8])[1]


def offload(iface: str, on: bool) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _, setter in ETHTOOL.values():
        _ethtool(sock, iface, setter, int(on))
    return {name: bool(_ethtool(sock, iface, getter)) for name, (getter, _) in ETHTOOL.items()}


def main(argv: list[str]) -> int:
    if argv[:1] == ["ping"]:
        interval = float(argv[3]) if len(argv) > 3 else 0.05
        print(json.dumps(ping(argv[1], int(argv[2]), interval)))
        return 0
    if argv[:1] == ["offload"]:
        print(json.dumps(offload(argv[1], argv[2] == "on")))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
