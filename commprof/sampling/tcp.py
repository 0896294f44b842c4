"""Latency during the run: the kernel's view of the job's own TCP connections.

Every ``period_s`` the source lists the socket inodes held by the job's processes
(``/proc/<pid>/fd``) and asks the kernel for those sockets' ``tcp_info`` through ``ss -tinHe``
(iproute2's sock_diag client: present wherever ``ip`` is, a stable text format, and no new Python
dependency; a pyroute2 in-process query would save the fork, ~2 ms per period, but adds a
netlink library to every install).  Per peer address it emits the median smoothed RTT and RTT
variance over the job's connections to that peer, the smallest ``minrtt`` among them (the path's
round trip without queueing or delayed ACKs), the sum of their retransmitted segments (as the
kernel counts them since each connection opened) and the number of connections.

gloo, NCCL's socket transport and the rendezvous store all use TCP; NCCL over InfiniBand/RoCE
does not, and no RTT is sampled there (the report says so).
"""
from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
from typing import Callable, Iterable

from commprof.sampling.series import GAUGE, Emit, Series

_INO = re.compile(r"\bino:(\d+)")
_RTT = re.compile(r"\brtt:([\d.]+)/([\d.]+)")
_RETRANS = re.compile(r"\bretrans:\d+/(\d+)")
_MINRTT = re.compile(r"\bminrtt:([\d.]+)")


def parse_ss(text: str) -> list[dict]:
    """Connections of ``ss -tinHe`` output: local, peer, inode, srtt/rttvar (ms), retrans."""
    conns = []
    current = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            parts = line.split()
            m = _INO.search(line)
            if len(parts) < 4 or m is None:
                current = None
                continue
            current = {"local": parts[2], "peer": parts[3], "inode": int(m.group(1)),
                       "srtt_ms": None, "rttvar_ms": None, "minrtt_ms": None, "retrans": 0}
            conns.append(current)
        elif current is not None:
            m = _RTT.search(line)
            if m:
                current["srtt_ms"], current["rttvar_ms"] = float(m.group(1)), float(m.group(2))
            m = _RETRANS.search(line)
            if m:
                current["retrans"] = int(m.group(1))
            m = _MINRTT.search(line)
            if m:
                current["minrtt_ms"] = float(m.group(1))
    return conns


def peer_host(addr: str) -> str:
    """``[::ffff:10.0.0.2]:29500`` / ``10.0.0.2:29500`` -> ``10.0.0.2``."""
    host = addr.rsplit(":", 1)[0].strip("[]")
    return host.removeprefix("::ffff:")


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """Inodes of the sockets that ``pids`` hold open."""
    inodes = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # exited, or not ours to read
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


SS_ARGV = ["ss", "-tinHe", "state", "established"]


def run_ss() -> tuple[str, int]:
    """(``ss -tinHe state established`` output, CPU ns the ``ss`` process used)."""
    proc = subprocess.Popen(SS_ARGV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the job's
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, SS_ARGV)
    return out.decode(errors="replace"), int((usage.ru_utime + usage.ru_stime) * 1e9)


class TcpSource:
    """RTT, RTT variance and retransmits of the job's TCP connections, per peer address."""

    name = "tcp"

    def __init__(self, job_pids: Callable[[], Iterable[int]], period_s: float = 1.0,
                 ss: Callable[[], tuple[str, int]] | None = None):
        self.job_pids = job_pids
        self.period_s = period_s
        self._ss = ss or run_ss
        self.child_cpu_ns = 0  # CPU of the `ss` processes, part of the sampler's cost
        self._why = None if ss is not None or shutil.which("ss") else \
            "`ss` (iproute2) not found: no RTT sampled"

    def status(self) -> dict:
        return {"available": self._why is None, "why": self._why, "period_s": self.period_s}

    def read(self, emit: Emit) -> None:
        if self._why is not None:
            return
        mine = socket_inodes(self.job_pids())
        if not mine:
            return
        by_peer: dict[str, list[dict]] = {}
        text, cpu_ns = self._ss()
        self.child_cpu_ns += cpu_ns
        for c in parse_ss(text):
            if c["inode"] in mine and c["srtt_ms"] is not None:
                by_peer.setdefault(peer_host(c["peer"]), []).append(c)
        for peer, conns in sorted(by_peer.items()):
            emit(Series("tcp", peer, "srtt_ms", "ms", GAUGE),
                 statistics.median(c["srtt_ms"] for c in conns))
            emit(Series("tcp", peer, "rttvar_ms", "ms", GAUGE),
                 statistics.median(c["rttvar_ms"] for c in conns))
            mins = [c["minrtt_ms"] for c in conns if c["minrtt_ms"] is not None]
            if mins:  # the path's RTT without queueing or delayed ACKs
                emit(Series("tcp", peer, "minrtt_ms", "ms", GAUGE), min(mins))
            emit(Series("tcp", peer, "retrans", "segments", GAUGE), float(sum(c["retrans"] for c in conns)))
            emit(Series("tcp", peer, "connections", "", GAUGE), float(len(conns)))
