"""TCP bulk with and without MSG_ZEROCOPY, on loopback and across a veth pair between two
network namespaces (root): 1 MiB buffers, 2 GiB by default, every chunk's sequence checked.

    sudo python bench/zerocopy_bench.py [--gib 2] [--rounds 3]

The sender writes from a ring of 16 buffers and calls flush_zerocopy() before reusing one, so
no buffer is written while the kernel may still read it. The receiver reads with
recv_exactly_into. Reported: GB/s (median of interleaved rounds) and what the kernel said
about each zero-copy send (zerocopy_stats: how many it copied after all). On loopback the
kernel always copies (the data is delivered locally), so zero-copy can only cost there; across
veth the pages can be handed over.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1 << 20

RECEIVER = """
import csock, struct, sys, time
listener = csock.create_server((sys.argv[1], 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
chunk = bytearray(1 << 20)
n = int(sys.argv[2])
start = 0.0
for i in range(n):
    conn.recv_exactly_into(chunk)
    if i == 0:
        start = time.perf_counter()
    if struct.unpack_from("!Q", chunk)[0] != i:
        sys.exit(f"chunk {i} out of order")
print(time.perf_counter() - start, flush=True)
"""

SENDER = """
import csock, json, struct, sys
sock = csock.create_connection((sys.argv[1], int(sys.argv[2])))
n, zerocopy = int(sys.argv[3]), sys.argv[4] == "1"
ring = [bytearray(b"z" * (1 << 20)) for _ in range(16)]
for i in range(n):
    if zerocopy and i and i % len(ring) == 0:
        sock.flush_zerocopy()
    struct.pack_into("!Q", ring[i % len(ring)], 0, i)
    sock.send_buffers([ring[i % len(ring)]], zerocopy=zerocopy)
if zerocopy:
    sock.flush_zerocopy()
print(json.dumps(sock.zerocopy_stats()), flush=True)
sock.close()
"""


def run(prefix_rx: list[str], prefix_tx: list[str],
        host: str, n: int, zerocopy: bool) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rx = subprocess.Popen([*prefix_rx, sys.executable, "-c", RECEIVER, host, str(n)],
                          stdout=subprocess.PIPE, text=True, env=env)
    assert rx.stdout is not None
    port = rx.stdout.readline().strip()
    tx = subprocess.run([*prefix_tx, sys.executable, "-c", SENDER, host, port,
                         str(n), "1" if zerocopy else "0"],
                        capture_output=True, text=True, env=env, timeout=600)
    if tx.returncode != 0:
        rx.kill()
        raise SystemExit(tx.stderr)
    out, _ = rx.communicate(timeout=600)
    if rx.returncode != 0:
        raise SystemExit(f"receiver failed ({rx.returncode})")
    elapsed = float(out.strip().splitlines()[-1])
    return (n - 1) * CHUNK / elapsed / 1e9, tx.stdout.strip()


def namespaces() -> tuple[list[str], list[str], str, list[str]]:
    tag = uuid.uuid4().hex[:6]
    a, b = f"zca{tag}", f"zcb{tag}"
    commands = [["ip", "netns", "add", a], ["ip", "netns", "add", b],
                ["ip", "link", "add", f"za{tag}", "netns", a, "type", "veth", "peer",
                 "name", f"zb{tag}", "netns", b],
                ["ip", "-n", a, "addr", "add", "10.78.0.1/24", "dev", f"za{tag}"],
                ["ip", "-n", b, "addr", "add", "10.78.0.2/24", "dev", f"zb{tag}"],
                ["ip", "-n", a, "link", "set", f"za{tag}", "up"],
                ["ip", "-n", b, "link", "set", f"zb{tag}", "up"],
                ["ip", "-n", a, "link", "set", "lo", "up"],
                ["ip", "-n", b, "link", "set", "lo", "up"]]
    for command in commands:
        subprocess.run(command, check=True, capture_output=True)
    time.sleep(0.5)
    return ["ip", "netns", "exec", b], ["ip", "netns", "exec", a], "10.78.0.2", [a, b]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = max(2, int(args.gib * 1024))
    paths: list[tuple[str, list[str], list[str], str]] = [("loopback", [], [], "127.0.0.1")]
    created: list[str] = []
    if os.geteuid() == 0:
        rx_prefix, tx_prefix, host, created = namespaces()
        paths.append(("veth", rx_prefix, tx_prefix, host))
    else:
        print("not root: the veth pair between namespaces is left out")
    try:
        for name, rx_prefix, tx_prefix, host in paths:
            rates: dict[bool, list[float]] = {False: [], True: []}
            stats = ""
            for r in range(args.rounds):
                for zerocopy in ((False, True) if r % 2 == 0 else (True, False)):
                    rate, report = run(rx_prefix, tx_prefix, host, n, zerocopy)
                    rates[zerocopy].append(rate)
                    stats = report if zerocopy else stats
            copy, zc = statistics.median(rates[False]), statistics.median(rates[True])
            print(f"{name:9} {n} x 1 MiB: copy {copy:5.2f} GB/s, MSG_ZEROCOPY {zc:5.2f} GB/s "
                  f"({zc / copy:.2f}x); last zero-copy run: {stats}")
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":
    main()
