"""Soak: churn connections, move frames and datagrams, and report fds and RSS before and after.

    python tests/soak_driver.py              # 100k connections, 1M frames, 10M datagrams
    python tests/soak_driver.py --short       # the quick version the tests run

Targets: the fd count identical at the end, RSS within 5% of its value after warm-up.
Exit status 1 if either target is missed.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import threading
import time

from pairs import fd_count  # run as a script (python tests/soak_driver.py): tests/ is on sys.path

import csock

LINGER_RESET = struct.pack("ii", 1, 0)     # close with RST: no TIME_WAIT to exhaust ports


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def churn_connections(n: int) -> None:
    with csock.create_server(("127.0.0.1", 0), backlog=128) as server:
        address = server.getsockname()
        for _ in range(n):
            client = csock.create_connection(address)
            conn, _ = server.accept()
            client.sendall(b"ping")
            assert conn.recv_exactly(4) == b"ping"
            client.setsockopt(csock.SOL_SOCKET, csock.SO_LINGER, LINGER_RESET)
            client.close()
            conn.close()


def move_frames(n: int, batch: int = 1000) -> None:
    a, b = csock.socketpair()
    with a, b:
        sender, receiver = csock.FramedStream(a), csock.FramedStream(b)

        def send() -> None:
            for start in range(0, n, batch):
                sender.send_many(
                    [struct.pack("!Q", i) * 8 for i in range(start, min(n, start + batch))]
                )

        t = threading.Thread(target=send)
        t.start()
        expected = 0
        while expected < n:
            for message in receiver.recv_many():
                if struct.unpack_from("!Q", message)[0] != expected:
                    raise AssertionError(f"frame {expected} lost or out of order")
                expected += 1
        t.join()


def move_datagrams(n: int, batch: int = 256) -> None:
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)   # reliable: no loss to count
    with a, b:
        def send() -> None:
            for start in range(0, n, batch):
                a.send_batch([struct.pack("!Q", i) for i in range(start, min(n, start + batch))])

        t = threading.Thread(target=send)
        t.start()
        expected = 0
        while expected < n:
            for datagram in b.recv_batch(max_messages=batch):
                if struct.unpack_from("!Q", datagram.data)[0] != expected:
                    raise AssertionError(f"datagram {expected} lost or out of order")
                expected += 1
        t.join()


def soak(connections: int, frames: int, datagrams: int, log=print) -> bool:
    phases = [("connections", churn_connections, connections), ("frames", move_frames, frames)]
    if hasattr(csock.DatagramSocket, "send_batch"):
        phases.append(("datagrams", move_datagrams, datagrams))
    for _, run, count in phases:                # warm-up: allocator pools, caches, imports
        run(max(1, count // 100))
    fds0, rss0 = fd_count(), rss_bytes()
    log(f"start: {fds0} fds, RSS {rss0 / 2**20:.1f} MiB")
    for name, run, count in phases:
        started = time.monotonic()
        run(count)
        log(f"{name}: {count:,} in {time.monotonic() - started:.1f} s; "
            f"{fd_count()} fds, RSS {rss_bytes() / 2**20:.1f} MiB")
    fds1, rss1 = fd_count(), rss_bytes()
    growth = (rss1 - rss0) / rss0
    ok = fds1 == fds0 and growth <= 0.05
    log(f"end: {fds1} fds (start {fds0}), RSS {rss1 / 2**20:.1f} MiB ({growth:+.1%}): "
        f"{'OK' if ok else 'FAILED'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--datagrams", type=int, default=10_000_000)
    parser.add_argument("--short", action="store_true",
                        help="10k connections, 200k frames, 200k datagrams")
    args = parser.parse_args(argv)
    if args.short:
        args.connections, args.frames, args.datagrams = 10_000, 200_000, 200_000
    return 0 if soak(args.connections, args.frames, args.datagrams) else 1


if __name__ == "__main__":
    sys.exit(main())
