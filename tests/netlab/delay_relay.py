"""Userspace delay line between two TUN devices in two network namespaces.

The kernel here has no ``sch_netem``, so :class:`netlab.Lab` emulates one-way
propagation delay with this relay: it opens a TUN device (``IFF_TUN |
IFF_NO_PI``) inside namespace A and one inside namespace B (entering each with
``setns(2)`` through ctypes -- ``os.setns`` only exists from Python 3.12), then
copies every IP packet read from one TUN to the other ``delay_ms`` later
(per-direction FIFO of ``(due_time, packet)``; the delay is constant, so FIFO
order is also due order).  Timeouts use ``select()`` (microsecond timeval), so
the added delay is accurate to ~0.1 ms on an idle machine; under CPU contention
the relay, like any process, can be scheduled late.

Usage (the harness does this; needs root)::

    python delay_relay.py --ns-a /var/run/netns/A --ns-b /var/run/netns/B \\
        --tun-a tunA --tun-b tunB --delay-ms 5

It prints ``ready`` on stdout once both devices exist, then relays until it
gets SIGTERM/SIGINT, its parent dies (``PR_SET_PDEATHSIG``) or a TUN device
disappears (namespace deleted).  The TUN devices are not persistent: they
vanish with the relay's file descriptors, i.e. when the relay exits.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import errno
import fcntl
import os
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
MAX_PKT = 65536
# Packets queued per direction beyond which new ones are dropped (a real link
# would drop too); large enough for a TCP window at the rates the lab uses.
MAX_QUEUE = 20000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def open_tun(name: str) -> int:
    if len(name.encode()) > 15:
        raise ValueError(f"interface name too long (IFNAMSIZ): {name!r}")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    os.set_blocking(fd, False)
    return fd


def relay(fd_a: int, fd_b: int, delay_s: float) -> None:
    peer = {fd_a: fd_b, fd_b: fd_a}
    queues: dict[int, collections.deque] = {fd_a: collections.deque(), fd_b: collections.deque()}
    fds = [fd_a, fd_b]
    clock = time.monotonic
    while True:
        now = clock()
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(due) - now) if due else 1.0
        readable, _, _ = select.select(fds, [], [], timeout)
        now = clock()
        for fd in readable:
            q = queues[fd]
            # Drain what is there now (bounded, so the other side is not starved).
            for _ in range(256):
                try:
                    pkt = os.read(fd, MAX_PKT)
                except BlockingIOError:
                    break
                except OSError as e:  # device gone (namespace deleted)
                    if e.errno in (errno.EBADFD, errno.ENODEV, errno.ENXIO):
                        print(f"relay: TUN gone ({e})", file=sys.stderr, flush=True)
                        return
                    if e.errno == errno.EIO:
                        break
                    raise
                if not pkt:
                    print("relay: EOF on TUN", file=sys.stderr, flush=True)
                    return
                if len(q) < MAX_QUEUE:
                    q.append((now + delay_s, pkt))
        now = clock()
        for src, q in queues.items():
            dst = peer[src]
            while q and q[0][0] <= now:
                _, pkt = q.popleft()
                try:
                    os.write(dst, pkt)
                except BlockingIOError:
                    pass  # dropped, like a full link
                except OSError as e:
                    if e.errno in (errno.EBADFD, errno.ENODEV, errno.ENXIO):
                        print(f"relay: TUN gone ({e})", file=sys.stderr, flush=True)
                        return
                    # EIO: the destination device is down (e.g. not brought up yet);
                    # EINVAL/ENOBUFS/EMSGSIZE: malformed or no room.  Drop the packet.
                    if e.errno in (errno.EIO, errno.EINVAL, errno.ENOBUFS, errno.EMSGSIZE):
                        continue
                    raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns-a", required=True, help="path of namespace A (/var/run/netns/NAME)")
    ap.add_argument("--ns-b", required=True)
    ap.add_argument("--tun-a", required=True)
    ap.add_argument("--tun-b", required=True)
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay per direction")
    args = ap.parse_args(argv)
    # SIGTERM/SIGINT (also sent when the parent dies) end the relay at once.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)  # wake up on time (default slack is 50 us)
    if os.getppid() == 1:  # parent already gone before prctl took effect
        return 1
    setns(args.ns_a)
    fd_a = open_tun(args.tun_a)
    setns(args.ns_b)
    fd_b = open_tun(args.tun_b)
    print("ready", flush=True)
    relay(fd_a, fd_b, args.delay_ms / 1000.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
