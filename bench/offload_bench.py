"""UDP one way over loopback: plain send_batch/recv_batch vs GSO (segment_size="auto") +
GRO (recv_batch(gro=True)), for 64-byte and 1200-byte datagrams.

A sender process sends batches of 1024 datagrams for --seconds; the receiver (this process)
counts what arrives in that window. Rates are of datagrams the receiver got (loss counted).

    PYTHONPATH=. python bench/offload_bench.py [--seconds 3] [--sizes 64,1200] [--spin]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import csock  # noqa: E402


def sender(address, size, offload, seconds, ready, counter):
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    tx.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 8 << 20)
    batch = [bytes([i % 256]) * size for i in range(1024)]
    seg = "auto" if offload else None
    ready.wait()
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sent += tx.send_batch(batch, address, segment_size=seg)
    counter.value = sent
    tx.close()


def run(size, offload, seconds):
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 32 << 20)
    rx.bind(("127.0.0.1", 0))
    if offload:
        rx.enable_gro()
    rx.settimeout(0.5)
    ready = multiprocessing.Event()
    counter = multiprocessing.Value("q", 0)
    proc = multiprocessing.Process(target=sender, args=(rx.getsockname(), size, offload, seconds, ready, counter))
    proc.start()
    got = nbytes = 0
    ready.set()
    start = time.monotonic()
    last = start
    try:
        while True:
            batch = rx.recv_batch(max_messages=1024, bufsize=2048, gro=offload)
            got += len(batch)
            for d in batch:
                nbytes += len(d.data)
            last = time.monotonic()
    except TimeoutError:
        pass
    proc.join()
    rx.close()
    elapsed = max(last - start, 1e-9)
    return {"sent": counter.value, "got": got, "dps": got / elapsed, "mbps": nbytes / elapsed / 1e6}


def echo(address_queue, spin, rounds):
    s = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.spin_us = spin
    address_queue.put(s.getsockname())
    for _ in range(rounds):
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)
    s.close()


def ping_pong(spin, rounds=5000):
    """Median round trip (µs) of one 64-byte datagram, both sides with spin_us=spin."""
    queue = multiprocessing.Queue()
    proc = multiprocessing.Process(target=echo, args=(queue, spin, rounds))
    proc.start()
    address = queue.get()
    s = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    s.spin_us = spin
    s.settimeout(2)
    times = []
    payload = b"p" * 64
    for _ in range(rounds):
        t = time.perf_counter_ns()
        s.sendto(payload, address)
        s.recvfrom(2048)
        times.append(time.perf_counter_ns() - t)
    proc.join()
    s.close()
    times.sort()
    return times[len(times) // 2] / 1000, times[int(len(times) * 0.99)] / 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sizes", default="64,1200")
    parser.add_argument("--spin", action="store_true", help="also UDP ping-pong with spin_us 0/50/200")
    args = parser.parse_args()
    print(f"{'size':>5} {'mode':>8} {'sent':>10} {'received':>10} {'datagrams/s':>12} {'MB/s':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        results = {}
        for name, offload in (("plain", False), ("gso+gro", True)):
            r = results[name] = run(size, offload, args.seconds)
            print(f"{size:>5} {name:>8} {r['sent']:>10} {r['got']:>10} {r['dps']:>12,.0f} {r['mbps']:>8.1f}")
        ratio = results["gso+gro"]["dps"] / max(results["plain"]["dps"], 1)
        print(f"{size:>5} {'ratio':>8} {'':>10} {'':>10} {ratio:>11.2f}x")
    if args.spin:
        print("\nUDP ping-pong, 64 B (median / p99 round trip, µs)")
        for spin in (0, 50, 200):
            median, p99 = ping_pong(spin)
            print(f"  spin_us={spin:<4} {median:8.1f} {p99:8.1f}")


if __name__ == "__main__":
    main()
