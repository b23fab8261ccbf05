"""Issue 7: UDP GSO send (segment_size), GRO receive (gro=True), spin_us, per-datagram
metadata and MSG_ZEROCOPY. Every test checks real bytes, counts and order."""
from __future__ import annotations

import errno
import functools
import os
import re
import signal
import socket as stdlib_socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import csock

from .pairs import Index, call_as_a_signal_lands, fd_count, receive, tcp_pair, udp_pair
from .tracing import needs_strace, strace

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


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
    for i, (d, m) in enumerate(zip(got, sent, strict=True)):
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
        assert csock._fastio.socket_state(tx).gso_off is True
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
        csock._fastio.socket_state(tx).gso_off = True
    print(tx.send_batch(msgs, rx.getsockname(), segment_size=seg))
    rx.settimeout(5)
    got = []
    while len(got) < 640:
        got += rx.recv_batch(max_messages=1024)
    assert [bytes(d.data) for d in got] == msgs
""")


@needs_strace
@pytest.mark.parametrize("mode, vlen", [("auto", 10), ("none", 640), ("off", 640)])
def test_gso_strace_fewer_messages(tmp_path, mode, vlen):
    text, out = strace(tmp_path, STRACE_SCRIPT, "sendmmsg", mode)
    assert out.strip() == "640"
    calls = re.findall(r"\], (\d+), MSG_NOSIGNAL\) = (\d+)", text)
    # 640 datagrams of 1000 bytes: runs of 64 (64,000 bytes <= 65,507) -> 10 messages.
    assert calls == [(str(vlen), str(vlen))]
    assert bool(re.search(r"cmsg_type=(UDP_SEGMENT|0x67)", text)) == (mode == "auto")


# --- GRO ------------------------------------------------------------------------------------

def gro_pair(kind="v4"):
    tx, rx = udp_pair(kind)
    assert rx.enable_gro() is True
    return tx, rx


def test_pending_datagrams_counts_what_a_split_message_left():
    """The rest of a coalesced message beyond max_messages waits in the socket's state, where
    poll cannot see it: pending_datagrams (which csock.aio asks) counts it, and the next
    recv_batch hands it over first, in order, without a system call."""
    tx, rx = gro_pair()
    with tx, rx:
        sent = payloads(10, 500)
        assert tx.send_batch(sent, rx.getsockname(), segment_size=500) == 10
        first = rx.recv_batch(max_messages=1, gro=True)
        waiting = csock._fastio.pending_datagrams(rx)
        if waiting == 0:
            pytest.skip("the kernel did not coalesce the GSO message on loopback")
        rest = rx.recv_batch(max_messages=waiting, gro=True)
        assert [bytes(d.data) for d in first + rest] == sent[:1 + waiting]
        assert csock._fastio.pending_datagrams(rx) == 0


@pytest.mark.parametrize("kind", ["v4", "v6"])
@pytest.mark.parametrize("gso", [True, False])
@pytest.mark.parametrize("size", [64, 1200])
def test_gro_receives_exactly_what_was_sent(kind, gso, size):
    tx, rx = gro_pair(kind)
    with tx, rx:
        sent = payloads(1000, size, last=size // 2) + [b"", b"tail"] + payloads(70, 333)
        assert tx.send_batch(sent, rx.getsockname(),
                             segment_size="auto" if gso else None) == len(sent)
        got = []
        while len(got) < len(sent):
            batch = rx.recv_batch(gro=True)
            assert 0 < len(batch) <= 64
            got.extend(batch)
        assert_same(got, sent, tx.getsockname())
        rx.setblocking(False)
        with pytest.raises(BlockingIOError):
            rx.recv_batch(gro=True)


def test_gro_set_by_first_recv_batch_and_stays():
    tx, rx = udp_pair()
    with tx, rx:
        rx.setblocking(False)
        with pytest.raises(BlockingIOError):
            rx.recv_batch(gro=True)                      # sets UDP_GRO
        assert rx.getsockopt(17, 104) == 1               # SOL_UDP, UDP_GRO
        sent = payloads(200, 500)
        tx.send_batch(sent, rx.getsockname(), segment_size=500)
        rx.settimeout(5)
        got = receive(rx, 200)                           # gro=False: still split
        assert_same(got, sent, tx.getsockname())


@pytest.mark.parametrize("value", [1, b"\x01\x00\x00\x00", Index(1)], ids=["int", "bytes", "index"])
def test_gro_set_with_setsockopt_is_split_too(value):
    """UDP_GRO set with the stdlib's setsockopt, not enable_gro(), in any of its value forms
    (only an int was noticed): recv_batch still hands over each datagram of a coalesced
    message, not the message glued."""
    tx, rx = udp_pair()
    with tx, rx:
        rx.setsockopt(17, 104, value)                    # SOL_UDP, UDP_GRO
        sent = payloads(20, 300)
        tx.send_batch(sent, rx.getsockname(), segment_size=300)
        rx.settimeout(5)
        assert_same(receive(rx, 20), sent, tx.getsockname())


def test_gro_turned_off_with_setsockopt_is_noticed_too():
    """UDP_GRO set, then cleared with setsockopt: the kernel coalesces no more, and csock's
    socket no longer takes it for a GRO socket (recv_batch_into refused it, ValueError)."""
    tx, rx = udp_pair()
    with tx, rx:
        rx.setsockopt(17, 104, 1)                        # SOL_UDP, UDP_GRO
        rx.setsockopt(17, 104, 0)
        tx.send_batch([b"abc", b"defg"], rx.getsockname())
        rx.settimeout(5)
        buffer = bytearray(4096)
        assert rx.recv_batch_into(buffer, 1024) == [3, 4]
        assert buffer[:3] == b"abc" and buffer[1024:1028] == b"defg"


@pytest.mark.parametrize("adopt", ["fileno", "fromfd", "socket.dup", "dup"])
def test_an_fd_adopted_with_gro_set_is_split_too(adopt):
    """A csock socket made on an fd whose UDP_GRO is already set (by a stdlib socket, another
    process, the csock socket it was dup()ed from): recv_batch hands over each datagram of a
    coalesced message, not the message glued."""
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    rx = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(17, 104, 1)                            # SOL_UDP, UDP_GRO
    if adopt == "fileno":
        adopted = csock.socket(fileno=rx.detach())
    elif adopt == "fromfd":
        adopted = csock.fromfd(rx.fileno(), rx.family, rx.type)
    elif adopt == "socket.dup":
        adopted = csock.socket(fileno=stdlib_socket.dup(rx.fileno()))
    else:
        with csock.socket(fileno=rx.detach()) as first:
            adopted = first.dup()
    with tx, rx, adopted:
        sent = payloads(20, 300)
        tx.send_batch(sent, adopted.getsockname(), segment_size=300)
        adopted.settimeout(5)
        assert_same(receive(adopted, 20), sent, tx.getsockname())


def test_gro_set_behind_the_sockets_back_is_noticed_at_the_first_coalesced_message():
    """UDP_GRO set by another holder of the file (a stdlib socket on a dup): csock could not
    see it, and every coalesced message came back glued. The kernel says MSG_CTRUNC when it
    has a segment size to give and no control room: that first message is whole (its size
    unknown), every batch after it is split."""
    tx, rx = udp_pair()
    with tx, rx, stdlib_socket.socket(fileno=os.dup(rx.fileno())) as other:
        other.setsockopt(17, 104, 1)                     # SOL_UDP, UDP_GRO
        rx.settimeout(5)
        first = payloads(3, 1000)
        tx.send_batch(first, rx.getsockname(), segment_size=1000)
        assert [bytes(d.data) for d in receive(rx, 1)] == [b"".join(first)]
        sent = payloads(20, 300)
        tx.send_batch(sent, rx.getsockname(), segment_size=300)
        assert_same(receive(rx, 20), sent, tx.getsockname())


@pytest.mark.parametrize("next_receive", ["recv_batch", "csock.uring.recv_many"])
def test_an_error_after_a_split_messages_rest_costs_none_of_it(next_receive):
    """recv_batch hands over the kept rest of a coalesced message, then asks the kernel for
    more; a socket error there (a connected socket's ECONNREFUSED) does not cost the rest: it
    is returned and the error raised by the socket's next batch receive, as recvmmsg(2) saves
    an error that follows a datagram for the next call."""
    tx, rx = gro_pair()
    with tx, rx:
        rx.connect(tx.getsockname())
        sent = payloads(10, 500)
        tx.send_batch(sent, rx.getsockname(), segment_size=500)
        rx.settimeout(5)
        first = rx.recv_batch(max_messages=3)
        source = tx.getsockname()
        tx.close()
        rx.send(b"to a closed port")                     # its ICMP error: ECONNREFUSED
        time.sleep(0.02)
        assert_same(first + rx.recv_batch(max_messages=64), sent, source)
        with pytest.raises(ConnectionRefusedError):
            if next_receive == "recv_batch":
                rx.recv_batch()
            else:
                import csock.uring
                csock.uring.recv_many([rx])
        rx.setblocking(False)
        with pytest.raises(BlockingIOError):
            rx.recv_batch()


def test_gro_max_messages_counts_datagrams_and_keeps_the_rest():
    tx, rx = gro_pair()
    with tx, rx:
        sent = payloads(64, 1000) + payloads(64, 900, last=5)
        tx.send_batch(sent, rx.getsockname(), segment_size="auto")
        got = []
        while len(got) < len(sent):
            batch = rx.recv_batch(max_messages=10, gro=True)
            assert 0 < len(batch) <= 10
            got.extend(batch)
        assert_same(got, sent, tx.getsockname())
        rx.setblocking(False)
        with pytest.raises(BlockingIOError):
            rx.recv_batch(max_messages=10)


def test_gro_pending_returned_without_blocking():
    """Kept datagrams come back at once even when nothing more is queued (timeout socket)."""
    tx, rx = gro_pair()
    with tx, rx:
        sent = payloads(40, 100)
        tx.send_batch(sent, rx.getsockname(), segment_size=100)
        rx.settimeout(2)
        first = rx.recv_batch(max_messages=1)
        start = time.monotonic()
        rest = receive(rx, 39, max_messages=64)
        assert time.monotonic() - start < 0.5
        assert_same(first + rest, sent, tx.getsockname())


class Interrupted(Exception):
    pass


@pytest.mark.timeout(120, method="thread")      # takes SIGALRM, pytest-timeout's own
def test_gro_kept_datagrams_survive_a_handler_raising_in_the_next_recv_batch():
    """The rest of a split message that the socket keeps is handed out by the next recv_batch;
    when a signal handler raises in that call, the socket still keeps it (the next call
    returns it), in order."""
    def handler(signum, frame):
        raise Interrupted

    tx, rx = gro_pair()
    old = signal.signal(signal.SIGALRM, handler)
    try:
        sent = payloads(40, 100)
        assert tx.send_batch(sent, rx.getsockname(), segment_size=100) == len(sent)
        time.sleep(0.05)
        got = rx.recv_batch(max_messages=1)
        kept = csock._fastio.pending_datagrams(rx)
        if not kept:
            pytest.skip("the kernel did not coalesce the GSO message on loopback")
        with pytest.raises(Interrupted):
            call_as_a_signal_lands(functools.partial(rx.recv_batch, 100))
        assert csock._fastio.pending_datagrams(rx) == kept
        rx.setblocking(False)
        got += receive(rx, len(sent) - 1, max_messages=100)
        assert_same(got, sent, tx.getsockname())
        with pytest.raises(BlockingIOError):
            rx.recv_batch()
    finally:
        signal.signal(signal.SIGALRM, old)
        tx.close()
        rx.close()


def gro_receiver_keeping(kept=39):
    """(tx, rx, sent): rx on GRO took 40 datagrams of one coalesced message from the kernel
    and returned the first: it keeps the rest for its next recv_batch."""
    tx, rx = gro_pair()
    sent = payloads(kept + 1, 100)
    assert tx.send_batch(sent, rx.getsockname(), segment_size=100) == len(sent)
    time.sleep(0.05)
    assert len(rx.recv_batch(max_messages=1)) == 1
    if csock._fastio.pending_datagrams(rx) != kept:
        tx.close()
        rx.close()
        pytest.skip("the kernel did not coalesce the GSO message on loopback")
    return tx, rx, sent


def test_close_drops_what_the_socket_kept_and_every_later_call_raises_ebadf():
    """close() drops what csock kept for the socket in user space (datagrams taken from the
    kernel, an error deferred to the next batch receive), as closing a stdlib socket drops a
    makefile()'s buffer: every later call raises EBADF, as the stdlib's recv does."""
    tx, rx, _ = gro_receiver_keeping()
    with tx:
        rx.close()
        assert csock._fastio.pending_datagrams(rx) == 0
        for max_messages in (1, 100):
            with pytest.raises(OSError) as info:
                rx.recv_batch(max_messages)
            assert info.value.errno == errno.EBADF

    tx, rx, sent = gro_receiver_keeping()               # an error deferred with the kept rest
    with tx, rx:
        rx.connect(tx.getsockname())
        tx.close()
        rx.send(b"to a closed port")                     # its ICMP error: ECONNREFUSED
        time.sleep(0.02)
        assert len(rx.recv_batch(max_messages=64)) == len(sent) - 1
        rx.close()
        with pytest.raises(OSError) as info:
            rx.recv_batch()
        assert info.value.errno == errno.EBADF


def test_detach_drops_the_kept_datagrams_and_hands_over_the_kernels_queue():
    """detach() hands over the fd alone: the datagrams csock had taken from the kernel and kept
    for the socket's next recv_batch are dropped with the socket object, as on close()
    (documented); the fd's new owner receives what the kernel queues from then on."""
    tx, rx, sent = gro_receiver_keeping()
    with tx:
        fd = rx.detach()
        assert csock._fastio.pending_datagrams(rx) == 0
        with pytest.raises(OSError) as info:
            rx.recv_batch()
        assert info.value.errno == errno.EBADF
        with csock.socket(fileno=fd) as new:
            new.setblocking(False)
            with pytest.raises(BlockingIOError):
                new.recv_batch()                         # the kept ones went with the object
            tx.send_batch([b"later"], new.getsockname())
            new.settimeout(5)
            assert [bytes(d.data) for d in new.recv_batch()] == [b"later"]


def test_gro_bufsize_cuts_each_datagram():
    tx, rx = gro_pair()
    with tx, rx:
        sent = payloads(20, 300, last=100)
        tx.send_batch(sent, rx.getsockname(), segment_size=300)
        got = receive(rx, 20, bufsize=200, gro=True)
        assert len(got) == 20
        for d, m in zip(got, sent, strict=False):
            assert bytes(d.data) == m[:200]
            assert d.truncated == (len(m) > 200)


GRO_STRACE_SCRIPT = textwrap.dedent("""
    import csock, sys
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM); rx.bind(("127.0.0.1", 0))
    rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 16 << 20)
    rx.enable_gro()
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    msgs = [bytes([i % 256]) * 1000 for i in range(640)]
    tx.send_batch(msgs, rx.getsockname(), segment_size="auto")
    rx.settimeout(5)
    got = []
    while len(got) < 640:
        got += rx.recv_batch(max_messages=1024, gro=True)
    assert [bytes(d.data) for d in got] == msgs
    print(len(got))
""")


@needs_strace
def test_gro_strace_coalesced_messages(tmp_path):
    text, out = strace(tmp_path, GRO_STRACE_SCRIPT, "recvmmsg")
    assert out.strip() == "640"
    returned = [int(n) for n in re.findall(r"recvmmsg\(.*\) = (\d+)", text)]
    # 640 datagrams arrive as 10 coalesced messages of 64 (each with a UDP_GRO cmsg).
    assert sum(returned) == 10, returned
    assert re.search(r"cmsg_type=(UDP_GRO|0x68)", text)


VETH_RECEIVER = textwrap.dedent("""
    import csock, sys, json
    family = csock.AF_INET6 if ":" in sys.argv[1] else csock.AF_INET
    rx = csock.socket(family, csock.SOCK_DGRAM)
    rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 16 << 20)
    rx.bind((sys.argv[1], 9977))
    rx.enable_gro()
    count = int(sys.argv[2])
    print("ready", flush=True)
    rx.settimeout(10)
    got = []
    while len(got) < count:
        got += rx.recv_batch(gro=True)
    print(json.dumps([[bytes(d.data).hex(), d.address[0]] for d in got]), flush=True)
""")

VETH_SENDER = textwrap.dedent("""
    import csock, sys, json, time
    family = csock.AF_INET6 if ":" in sys.argv[1] else csock.AF_INET
    tx = csock.socket(family, csock.SOCK_DGRAM)
    msgs = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
    seg = None if sys.argv[2] == "none" else "auto"
    tx.sendto(b"warm-up", (sys.argv[1], 9976))     # resolve the neighbour first (ARP / NDP):
    time.sleep(0.3)                                # unresolved, the kernel queues only a few
    print(tx.send_batch(msgs, (sys.argv[1], 9977), segment_size=seg), flush=True)
    print(csock._fastio.socket_state(tx).gso_off, flush=True)
""")


def wait_link_ready(net, timeout=10.0):
    """The veth carrier comes up asynchronously (linkwatch, up to ~1 s), and IPv6 addresses
    get their local routes only then: until, packets are dropped (Ip6InNoRoutes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = True
        for ns, address in ((net["a"], net["a6"]), (net["b"], net["b6"])):
            links = subprocess.run(["ip", "-n", ns, "link"], capture_output=True, text=True).stdout
            local = subprocess.run(["ip", "-n", ns, "-6", "route", "show", "table", "local"],
                                   capture_output=True, text=True).stdout
            ready = ready and "state UP" in links and address in local
        if ready:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("family", ["v4", "v6"])
@pytest.mark.parametrize("gso", [True, False])
def test_gro_across_veth(family, gso):
    import json

    from tests.netns import in_netns, veth_pair
    with veth_pair() as net:
        wait_link_ready(net)
        dst, src = (net["b4"], net["a4"]) if family == "v4" else (net["b6"], net["a6"])
        sent = payloads(300, 1200, last=17) + payloads(50, 64)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        rx = in_netns(net["b"], [sys.executable, "-c", VETH_RECEIVER, dst, str(len(sent))],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert rx.stdout.readline().strip() == "ready"
            tx = in_netns(net["a"],
                          [sys.executable, "-c", VETH_SENDER, dst, "auto" if gso else "none"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env)
            out, err = tx.communicate(json.dumps([m.hex() for m in sent]), timeout=30)
            assert tx.returncode == 0, err
            count, gso_off = out.split()
            assert count == str(len(sent))
            assert gso_off == "False"                  # GSO was used, not refused, over veth
            out, err = rx.communicate(timeout=30)
            assert rx.returncode == 0, err
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait()
        got = json.loads(out)
        assert [bytes.fromhex(h) for h, _ in got] == sent
        assert {a for _, a in got} == {src}


# --- metadata -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["v4", "v6"])
def test_metadata_timestamp_destination_interface_tos(kind):
    tx, rx = udp_pair(kind)
    with tx, rx:
        rx.enable_metadata(timestamp=True, destination=True, tos=True)
        if kind == "v4":
            tx.setsockopt(csock.IPPROTO_IP, csock.IP_TOS, 0xB8 | 1)        # EF, ECT(1)
        else:
            tx.setsockopt(csock.IPPROTO_IPV6, csock.IPV6_TCLASS, 0xB8 | 1)
        before = time.time()
        tx.send_batch(payloads(5, 100), rx.getsockname())
        got = receive(rx, 5)
        after = time.time()
        lo = stdlib_socket.if_nametoindex("lo")
        for d in got:
            assert before - 0.01 <= d.timestamp <= after + 0.01
            assert d.destination == rx.getsockname()[0]
            assert d.interface == lo
            assert d.tos == 0xB9
        assert [bytes(d.data) for d in got] == payloads(5, 100)


def test_metadata_off_by_default_and_selectable():
    tx, rx = udp_pair()
    with tx, rx:
        tx.send_batch([b"a"], rx.getsockname())
        (d,) = receive(rx, 1)
        assert (d.timestamp, d.destination, d.interface, d.tos) == (None, None, None, None)
        rx.enable_metadata(destination=True)
        tx.send_batch([b"b"], rx.getsockname())
        (d,) = receive(rx, 1)
        assert d.destination == "127.0.0.1" and d.interface is not None
        assert d.timestamp is None and d.tos is None
        rx.enable_metadata(timestamp=True)             # destination turned off again
        tx.send_batch([b"c"], rx.getsockname())
        (d,) = receive(rx, 1)
        assert d.destination is None and isinstance(d.timestamp, float)


def test_metadata_with_gro_applies_to_every_datagram():
    tx, rx = gro_pair()
    with tx, rx:
        rx.enable_metadata(timestamp=True, destination=True, tos=True)
        tx.setsockopt(csock.IPPROTO_IP, csock.IP_TOS, 0x10)
        sent = payloads(64, 800, last=3)
        tx.send_batch(sent, rx.getsockname(), segment_size="auto")
        got = receive(rx, 64, gro=True)
        assert_same(got, sent, tx.getsockname())
        assert {(d.destination, d.tos) for d in got} == {("127.0.0.1", 0x10)}
        assert all(abs(d.timestamp - time.time()) < 5 for d in got)


def test_metadata_rejects_non_udp():
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    with a, b, pytest.raises(ValueError):
        a.enable_metadata(timestamp=True)


# --- spin_us --------------------------------------------------------------------------------

def test_spin_attribute():
    with csock.socket(csock.AF_INET, csock.SOCK_DGRAM) as s:
        assert s.spin_us == 0
        s.spin_us = 50
        assert s.spin_us == 50
        with pytest.raises(ValueError):
            s.spin_us = -1
        with pytest.raises(ValueError):
            s.spin_us = 10_000_000
        s.spin_us = 0
        assert s.spin_us == 0


SO_BUSY_POLL = getattr(csock, "SO_BUSY_POLL", 46)


def test_spin_us_sets_so_busy_poll_where_allowed():
    """spin_us also sets SO_BUSY_POLL to the same value where the kernel allows it (raising it
    needs CAP_NET_ADMIN; lowering it never does)."""
    with csock.socket(csock.AF_INET, csock.SOCK_DGRAM) as s:
        took = csock._fastio.set_spin(s, 50)
        assert s.spin_us == 50                         # spinning is on either way
        if os.geteuid() == 0:
            assert took is True
            assert s.getsockopt(csock.SOL_SOCKET, SO_BUSY_POLL) == 50
        else:
            assert took is (s.getsockopt(csock.SOL_SOCKET, SO_BUSY_POLL) == 50)
        s.spin_us = 0
        assert s.getsockopt(csock.SOL_SOCKET, SO_BUSY_POLL) == 0


SPIN_RECEIVE = textwrap.dedent("""
    import sys, threading
    import csock
    method, timeout = sys.argv[1], None if sys.argv[2] == "None" else float(sys.argv[2])
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(timeout)
    rx.spin_us = 1_000_000
    threading.Timer(0.05, lambda: tx.sendto(b"spun-for", rx.getsockname())).start()
    if method == "recv":
        data = rx.recv(100)
    elif method == "recv_into":
        buf = bytearray(100)
        data = bytes(buf[:rx.recv_into(buf)])
    else:
        data = b"".join(bytes(d.data) for d in rx.recv_batch())
    assert data == b"spun-for", data
    print(rx.fileno())
""")


@needs_strace
@pytest.mark.parametrize("timeout", [None, 2.0])
@pytest.mark.parametrize("method", ["recv", "recv_into", "recv_batch"])
def test_spin_data_arriving_during_spin(tmp_path, method, timeout):
    """A datagram sent 50 ms into a 1 s spin is taken by the spin itself, through csock's own
    receive: blocking, by a receive with MSG_DONTWAIT (never one that sleeps in the kernel);
    with a timeout, after a poll with a zero timeout (never one that waits)."""
    text, out = strace(tmp_path, SPIN_RECEIVE, "recvfrom,recvmmsg,poll,ppoll", method, str(timeout))
    fd = out.strip()
    # recvfrom(fd, buf, len, flags, addr, addrlen) / recvmmsg(fd, vec, vlen, flags, timeout)
    receives = re.findall(
        rf"^\d+ +recvfrom\({fd}, .*, \d+, (\w[\w|]*), [^,]+, [^,]+\) += (-?\d+)", text, re.M
    )
    receives += re.findall(
        rf"^\d+ +recvmmsg\({fd}, .*, \d+, (\w[\w|]*), [^,]+\) += (-?\d+)", text, re.M
    )
    got = [flags for flags, result in receives if int(result) > 0]
    assert len(got) == 1, text[-2000:]      # the datagram, in one receive csock made
    # poll(fds, 1, ms) on x86_64; ppoll(fds, 1, {tv_sec=.., tv_nsec=..} or NULL, ...) elsewhere
    waits_ns = [int(ms) * 10**6 for ms in re.findall(r"\bpoll\(.*?\], 1, (-?\d+)", text)]
    ppoll = r"ppoll\(.*?\], 1, (?:\{tv_sec=(\d+), tv_nsec=(\d+)\}|NULL)"
    waits_ns += [-1 if sec == "" else int(sec) * 10**9 + int(nsec)
                 for sec, nsec in re.findall(ppoll, text)]
    if timeout is None:
        assert "MSG_DONTWAIT" in got[0], text[-2000:]
        assert all("MSG_DONTWAIT" in flags for flags, _ in receives)    # none slept
        assert len(receives) > 2                                        # it spun
    else:
        assert len(waits_ns) > 2 and set(waits_ns) == {0}, text[-2000:]  # spun, never waited


@pytest.mark.parametrize("spin", [50, 1_000_000])
def test_spin_timeout_stays_exact(spin):
    with csock.socket(csock.AF_INET, csock.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.spin_us = spin
        s.settimeout(0.2)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            s.recv_batch()
        elapsed = time.monotonic() - start
        assert 0.19 <= elapsed < 0.4, elapsed


class Alarm(Exception):
    pass


@pytest.mark.timeout(120, method="thread")      # takes SIGALRM, pytest-timeout's own
@pytest.mark.parametrize("timeout", [None, 5.0])
def test_spin_signal_interrupts(timeout):
    def handler(signum, frame):
        raise Alarm()
    old = signal.signal(signal.SIGALRM, handler)
    try:
        with csock.socket(csock.AF_INET, csock.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(timeout)
            s.spin_us = 100_000
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            start = time.monotonic()
            with pytest.raises(Alarm):
                s.recv(10)
            assert time.monotonic() - start < 1.0
            signal.setitimer(signal.ITIMER_REAL, 0.3)       # after the spin: while sleeping
            start = time.monotonic()
            with pytest.raises(Alarm):
                s.recv_batch()
            assert 0.25 <= time.monotonic() - start < 1.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_spin_stream_roundtrip():
    a, b = csock.socketpair()
    with a, b:
        a.spin_us = 1000
        b.spin_us = 1000
        a.sendall(b"x" * 100_000)
        assert b.recv_exactly(100_000) == b"x" * 100_000


# --- MSG_ZEROCOPY ---------------------------------------------------------------------------

@pytest.mark.parametrize("family", [csock.AF_INET, csock.AF_INET6])
def test_zerocopy_integrity_10k_sends_of_64k(family):
    import hashlib
    import threading
    fds = fd_count()
    a, b = tcp_pair(family)
    with a, b:
        size, count = 65536, 10_000
        pool = [bytes([i]) * size for i in range(7)] + [
            bytearray(os.urandom(size)),
            memoryview(os.urandom(size)),
        ]
        expected = hashlib.sha256()
        for i in range(count):
            expected.update(pool[i % len(pool)])
        got = hashlib.sha256()
        received = [0]

        def reader():
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            while received[0] < size * count:
                n = b.recv_into(buf)
                assert n > 0
                got.update(view[:n])
                received[0] += n

        thread = threading.Thread(target=reader)
        thread.start()
        for i in range(count):
            assert a.send_buffers([pool[i % len(pool)]], zerocopy=True) == size
        a.flush_zerocopy(timeout=10)
        thread.join(30)
        assert received[0] == size * count
        assert got.hexdigest() == expected.hexdigest()
        assert fd_count() == fds + 3    # the pair and the sender's dup for its error queue
        stats = a.zerocopy_stats()
        assert stats["pending"] == 0
        assert stats["sends"] >= 1 and stats["completed"] == stats["sends"]
        # Over loopback the kernel copies at delivery and says so: the socket stops asking.
        assert stats["copied"] >= 1 and stats["active"] is False
    assert fd_count() == fds            # every send completed: close() closed the dup too


def test_zerocopy_buffers_held_until_completion():
    """The peer does not read: sends stay in the queues, their exports stay held."""
    a, b = tcp_pair()
    with a, b:
        a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 64 << 10)
        b.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 64 << 10)
        buf = bytearray(b"z" * (256 << 10))
        a.setblocking(False)
        sent = 0
        try:
            while sent < 8 << 20:
                sent += a.send_buffers([buf], zerocopy=True)
        except BlockingIOError:
            pass
        assert sent > 0
        stats = a.zerocopy_stats()
        assert stats["sends"] >= 1
        assert stats["pending"] >= 1
        with pytest.raises(BufferError):
            buf.extend(b"!")                           # still exported: the kernel may read it
        with pytest.raises(TimeoutError):
            a.flush_zerocopy(timeout=0.2)
        # Read everything; then every completion arrives and every export is released.
        b.settimeout(5)
        total = 0
        while total < sent:
            chunk = b.recv(1 << 20)
            assert chunk == b"z" * len(chunk)
            total += len(chunk)
        assert total == sent
        a.flush_zerocopy(timeout=5)
        assert a.zerocopy_stats()["pending"] == 0
        buf.extend(b"!")                               # released: resizable again
        assert len(buf) == (256 << 10) + 1


def test_zerocopy_flush_timeout_is_exact():
    a, b = tcp_pair()
    with a, b:
        a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 64 << 10)
        b.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 64 << 10)
        a.setblocking(False)
        try:
            while True:
                a.send_buffers([bytes(128 << 10)], zerocopy=True)
        except BlockingIOError:
            pass
        if not a.zerocopy_stats()["pending"]:
            pytest.skip("every send already completed")
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            a.flush_zerocopy(timeout=0.3)
        assert 0.29 <= time.monotonic() - start < 0.6


def test_zerocopy_bytearray_released_after_each_flush():
    import threading
    a, b = tcp_pair()
    with a, b:
        buf = bytearray(b"abc" * 20000)
        done = threading.Event()
        received = bytearray()

        def reader():
            while len(received) < 100 * len(buf):
                received.extend(b.recv(1 << 20))
            done.set()

        thread = threading.Thread(target=reader)
        thread.start()
        for _ in range(100):
            a.send_buffers([buf, b""], zerocopy=True)
        a.flush_zerocopy(timeout=5)
        buf.append(1)
        del buf[-1]
        thread.join(10)
        assert bytes(received) == b"abc" * 20000 * 100


def test_zerocopy_on_unix_stream_is_a_plain_send():
    a, b = csock.socketpair()
    with a, b:
        assert a.send_buffers([b"hello ", bytearray(b"world")], zerocopy=True) == 11
        assert b.recv_exactly(11) == b"hello world"
        assert a.zerocopy_stats()["active"] is False
        assert a.flush_zerocopy() == 0


def test_zerocopy_threshold_copies_small_sends():
    """Below zerocopy_threshold (default 10240 bytes a sendmsg) a zerocopy=True send is copied:
    no MSG_ZEROCOPY send is counted and no buffer stays exported; 0 asks for zero copy always."""
    a, b = tcp_pair()
    with a, b:
        assert a.zerocopy_threshold == 10240
        small = bytearray(b"s" * 4096)
        assert a.send_buffers([small, b"+" * 1000], zerocopy=True) == 5096
        assert b.recv_exactly(5096) == b"s" * 4096 + b"+" * 1000
        assert a.zerocopy_stats()["sends"] == 0
        small.extend(b"!")                              # not held: resizable at once
        a.zerocopy_threshold = 0
        assert a.zerocopy_threshold == 0
        assert a.send_buffers([b"tiny"], zerocopy=True) == 4
        assert b.recv_exactly(4) == b"tiny"
        assert a.zerocopy_stats()["sends"] == 1
        a.flush_zerocopy(timeout=5)
        with pytest.raises(ValueError):
            a.zerocopy_threshold = -1
        with pytest.raises(TypeError):
            a.zerocopy_threshold = "big"                # type: ignore[assignment]
        assert a.zerocopy_threshold == 0


def test_zerocopy_nonblocking_partial_counts():
    a, b = tcp_pair()
    with a, b:
        a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 64 << 10)
        a.setblocking(False)
        data = os.urandom(4 << 20)
        n = a.send_buffers([data[: 2 << 20], data[2 << 20:]], zerocopy=True)
        assert 0 < n < len(data)
        b.settimeout(5)
        assert b.recv_exactly(n) == data[:n]
        a.flush_zerocopy(timeout=5)


# --- recv_batch follow-up reads never wait --------------------------------------------------

@pytest.mark.parametrize("gro", [False, True])
def test_recv_batch_full_first_read_does_not_wait_for_more(gro):
    """A first recvmmsg that fills every slot is followed by a MSG_DONTWAIT read: on a socket
    with a timeout that read must not poll until the deadline when nothing more is queued."""
    tx, rx = udp_pair()
    with tx, rx:
        rx.settimeout(3)
        sent = payloads(1024, 10)
        tx.send_batch(sent, rx.getsockname())
        start = time.monotonic()
        got = rx.recv_batch(max_messages=4096, gro=gro)
        assert time.monotonic() - start < 1.0
        assert_same(got, sent, tx.getsockname())


# --- properties: any mix of sizes and destinations arrives intact ---------------------------



@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.tuples(st.sampled_from([0, 1, 7, 64, 100, 1200, 1472]), st.integers(0, 1)),
                      min_size=1, max_size=300),
       segment=st.sampled_from(["auto", 64, 100, 1200, None]),
       gro=st.booleans())
def test_property_gso_gro_roundtrip(items, segment, gro):
    tx, rx = udp_pair()
    rx2 = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    rx2.bind(("127.0.0.1", 0))
    rx2.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 16 << 20)
    rx2.settimeout(5)
    with tx, rx, rx2:
        if gro:
            rx.enable_gro()
            rx2.enable_gro()
        targets = [rx.getsockname(), rx2.getsockname()]
        batch = [(bytes([i % 256]) * size, targets[dest]) for i, (size, dest) in enumerate(items)]
        assert tx.send_batch(batch, segment_size=segment) == len(batch)
        for target, sock in zip(targets, (rx, rx2), strict=True):
            expected = [m for m, t in batch if t == target]
            if expected:
                got = receive(sock, len(expected), max_messages=37, gro=gro)
                assert [bytes(d.data) for d in got] == expected
                assert {d.address for d in got} == {tx.getsockname()}


@needs_strace
@pytest.mark.parametrize("spin", [0, 20000])
def test_spin_polls_without_sleeping(tmp_path, spin):
    """spin_us: the receive is retried with MSG_DONTWAIT (EAGAIN, again and again) before
    csock sleeps in it, as a busy-polling C program does; without spin_us it tries once with
    the GIL held (io_try_held), then sleeps in the blocking receive."""
    script = textwrap.dedent(f"""
        import csock, threading, time
        a, b = csock.socketpair()
        b.spin_us = {spin}
        threading.Timer(0.05, lambda: a.send(b"x")).start()
        assert b.recv(1) == b"x"
    """)
    text, _ = strace(tmp_path, script, "recvfrom,poll,ppoll")
    spins = re.findall(r"recvfrom\(\d+, .*MSG_DONTWAIT.*= -1 EAGAIN", text)
    blocking = re.findall(r"recvfrom\(\d+, [^,]+, 1, 0, NULL, NULL\) = 1", text)
    if spin:
        assert len(spins) > 10
    else:
        assert len(spins) == 1 and len(blocking) == 1
