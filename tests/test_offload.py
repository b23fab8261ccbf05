"""Issue 7: UDP GSO send (segment_size), GRO receive (gro=True), spin_us, per-datagram
metadata and MSG_ZEROCOPY. Every test checks real bytes, counts and order."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket as stdlib_socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import csock

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"v4": (csock.AF_INET, "127.0.0.1"), "v6": (csock.AF_INET6, "::1")}


def udp_pair(kind="v4"):
    family, host = LOOPBACK[kind]
    rx = csock.socket(family, csock.SOCK_DGRAM)
    rx.bind((host, 0))
    rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 16 << 20)
    tx = csock.socket(family, csock.SOCK_DGRAM)
    tx.bind((host, 0))
    tx.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 16 << 20)
    rx.settimeout(5)
    return tx, rx


def receive(rx, n, **kwargs):
    got = []
    while len(got) < n:
        batch = rx.recv_batch(**kwargs)
        assert batch
        got.extend(batch)
    return got


def payloads(count, size, last=None):
    """count datagrams of size bytes, each distinct (index in the first bytes)."""
    out = []
    for i in range(count):
        n = last if (last is not None and i == count - 1) else size
        body = (i.to_bytes(4, "big") * (n // 4 + 1))[:n]
        out.append(body)
    return out


def assert_same(got, sent, address):
    assert len(got) == len(sent)
    for i, (d, m) in enumerate(zip(got, sent)):
        assert bytes(d.data) == bytes(m), f"datagram {i} differs"
        assert d.address[:2] == address[:2]
        assert not d.truncated


# --- GSO ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["v4", "v6"])
@pytest.mark.parametrize("size", [64, 1200])
@pytest.mark.parametrize("count", [1, 2, 63, 64, 65, 1000])
@pytest.mark.parametrize("segment_size", ["auto", "fixed"])
def test_gso_same_datagrams_out(kind, size, count, segment_size):
    tx, rx = udp_pair(kind)
    with tx, rx:
        sent = payloads(count, size)
        seg = size if segment_size == "fixed" else "auto"
        assert tx.send_batch(sent, rx.getsockname(), segment_size=seg) == count
        assert_same(receive(rx, count), sent, tx.getsockname())


@pytest.mark.parametrize("kind", ["v4", "v6"])
def test_gso_last_shorter_and_mixed_sizes(kind):
    tx, rx = udp_pair(kind)
    with tx, rx:
        sent = (payloads(10, 1000, last=7) + payloads(64, 100, last=99) + [b"x"] + payloads(3, 500)
                + [b"", b"yy"] + payloads(70, 64, last=1) + [bytes(1300)] + payloads(5, 1300))
        assert tx.send_batch(sent, rx.getsockname(), segment_size="auto") == len(sent)
        assert_same(receive(rx, len(sent)), sent, tx.getsockname())


def test_gso_fixed_size_with_other_sizes_mixed_in():
    tx, rx = udp_pair()
    with tx, rx:
        sent = payloads(5, 200) + payloads(3, 300) + payloads(4, 200, last=150) + [b"z" * 100]
        assert tx.send_batch(sent, rx.getsockname(), segment_size=200) == len(sent)
        assert_same(receive(rx, len(sent)), sent, tx.getsockname())


def test_gso_mixed_destinations_break_runs():
    tx, rx = udp_pair()
    rx2 = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    rx2.bind(("127.0.0.1", 0))
    rx2.settimeout(5)
    with tx, rx, rx2:
        a, b = rx.getsockname(), rx2.getsockname()
        items = []
        for i in range(300):
            items.append((bytes([i % 251]) * 512, a if (i // 7) % 2 == 0 else b))
        assert tx.send_batch(items, segment_size=512) == 300
        to_a = [m for m, dest in items if dest == a]
        to_b = [m for m, dest in items if dest == b]
        assert_same(receive(rx, len(to_a)), to_a, tx.getsockname())
        assert_same(receive(rx2, len(to_b)), to_b, tx.getsockname())


def test_gso_connected_socket_and_bytes_like_items():
    tx, rx = udp_pair()
    with tx, rx:
        tx.connect(rx.getsockname())
        sent = [bytearray(b"a" * 300), memoryview(b"b" * 300), b"c" * 300, bytearray(b"d" * 10)]
        assert tx.send_batch(sent, segment_size="auto") == 4
        assert_same(receive(rx, 4), sent, tx.getsockname())


def test_gso_bad_segment_size():
    tx, rx = udp_pair()
    with tx, rx:
        for bad in (0, -1, 65508, "big"):
            with pytest.raises(ValueError):
                tx.send_batch([b"x"], rx.getsockname(), segment_size=bad)
        with pytest.raises(TypeError):
            tx.send_batch([b"x"], rx.getsockname(), segment_size=1.5)


def test_gso_ignored_on_unix_datagram_socket(tmp_path):
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    with a, b:
        b.settimeout(5)
        sent = payloads(8, 100)
        assert a.send_batch(sent, segment_size="auto") == 8
        got = receive(b, 8)
        assert [bytes(d.data) for d in got] == sent


def test_gso_kernel_refusal_falls_back_and_is_remembered():
    """SO_NO_CHECK (no UDP checksum) makes the kernel refuse UDP_SEGMENT with EINVAL."""
    tx, rx = udp_pair()
    with tx, rx:
        tx.setsockopt(csock.SOL_SOCKET, 11, 1)          # SO_NO_CHECK
        sent = payloads(200, 700, last=3)
        assert tx.send_batch(sent, rx.getsockname(), segment_size="auto") == 200
        assert_same(receive(rx, 200), sent, tx.getsockname())
        assert tx._csock_gso_off is True
        assert tx.send_batch(sent, rx.getsockname(), segment_size=700) == 200
        assert_same(receive(rx, 200), sent, tx.getsockname())


def test_gso_nonblocking_counts_datagrams():
    tx, rx = udp_pair()
    with tx, rx:
        rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 1 << 20)
        tx.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 4096)
        tx.setblocking(False)
        sent = payloads(2000, 1000)
        total = 0
        try:
            total = tx.send_batch(sent, rx.getsockname(), segment_size="auto")
        except BlockingIOError:
            pass
        assert 0 <= total <= 2000
        rx.setblocking(False)
        got = []
        while True:
            try:
                got.extend(rx.recv_batch())
            except BlockingIOError:
                break
        # Loopback delivers synchronously: what send_batch reports went out is what arrived
        # (the receive buffer may drop, never invent or reorder).
        assert len(got) <= total
        data = [bytes(d.data) for d in got]
        index = 0
        for d in data:
            while sent[index] != d:
                index += 1
            index += 1


STRACE_SCRIPT = textwrap.dedent("""
    import csock, sys
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM); rx.bind(("127.0.0.1", 0))
    rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 16 << 20)
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    msgs = [bytes([i % 256]) * 1000 for i in range(640)]
    seg = None if sys.argv[1] == "none" else sys.argv[1]
    if sys.argv[1] == "off":
        seg = "auto"
        tx._csock_gso_off = True
    print(tx.send_batch(msgs, rx.getsockname(), segment_size=seg))
    rx.settimeout(5)
    got = []
    while len(got) < 640:
        got += rx.recv_batch(max_messages=1024)
    assert [bytes(d.data) for d in got] == msgs
""")


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("mode, vlen", [("auto", 10), ("none", 640), ("off", 640)])
def test_gso_strace_fewer_messages(tmp_path, mode, vlen):
    trace = tmp_path / "trace"
    proc = subprocess.run(["strace", "-f", "-e", "trace=sendmmsg", "-o", str(trace), sys.executable,
                           "-c", STRACE_SCRIPT, mode], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "640"
    calls = re.findall(r"\], (\d+), MSG_NOSIGNAL\) = (\d+)", trace.read_text())
    # 640 datagrams of 1000 bytes: runs of 64 (64,000 bytes <= 65,507) -> 10 messages.
    assert calls == [(str(vlen), str(vlen))]
    text = trace.read_text()
    assert bool(re.search(r"cmsg_type=(UDP_SEGMENT|0x67)", text)) == (mode == "auto")
