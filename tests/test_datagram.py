"""DatagramSocket (API §4): send_batch / recv_batch over sendmmsg / recvmmsg."""
from __future__ import annotations

import errno
import functools
import gc
import operator
import os
import resource
import socket as stdlib_socket
import struct
import sys
import textwrap
import threading
import time
from functools import partial

import pytest

import csock

from .pairs import (
    BAD_RECEIVE_BUFFERS,
    IPV6_FIELDS,
    LOOPBACK,
    address_of,
    call_as_a_signal_lands,
    outcome,
    outcome_of,
    receive,
    udp_pair,
)
from .tracing import LATE_WRITER, needs_recvfrom_nr, needs_strace, strace

FAMILIES = ["udp4", "udp6", "unix"]


@pytest.fixture(params=FAMILIES)
def dgram(request, tmp_path):
    """(sender, receiver, receiver address, sender address) for each family, unconnected."""
    kind = request.param
    if kind == "unix":
        rx_path, tx_path = str(tmp_path / "rx.sock"), str(tmp_path / "tx.sock")
        rx = csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM)
        rx.bind(rx_path)
        tx = csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM)
        tx.bind(tx_path)
        # A sender blocks once an AF_UNIX receiver holds net.unix.max_dgram_qlen (10 here)
        # datagrams, unless the receiver is connected back to it (unix_dgram_sendmsg in
        # net/unix/af_unix.c skips the check then): this lets one thread queue whole batches.
        rx.connect(tx_path)
    else:
        family, host = (csock.AF_INET, "127.0.0.1") if kind == "udp4" else (csock.AF_INET6, "::1")
        rx = csock.socket(family, csock.SOCK_DGRAM)
        rx.bind((host, 0))
        tx = csock.socket(family, csock.SOCK_DGRAM)
        tx.bind((host, 0))
    rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 4 << 20)
    # AF_UNIX charges queued data to the sender
    tx.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 4 << 20)
    with rx, tx:
        yield tx, rx, rx.getsockname(), tx.getsockname()


@pytest.mark.parametrize("family", [None, csock.AF_INET, csock.AF_INET6, csock.AF_UNIX])
def test_a_datagram_socket_made_without_a_type_is_sock_dgram(family):
    """As documented (DatagramSocket(family=-1, type=SOCK_DGRAM, ...)) and as SeqPacketSocket
    defaults to its own type: DatagramSocket() was a TCP socket."""
    args = () if family is None else (family,)
    with csock.DatagramSocket(*args) as sock:
        assert sock.type == csock.SOCK_DGRAM
        assert sock.family == (csock.AF_INET if family is None else family)


def test_types():
    with csock.socket(csock.AF_INET, csock.SOCK_DGRAM) as s:
        assert type(s) is csock.DatagramSocket


@pytest.mark.parametrize("count", [1, 1024, 5000])
def test_batches_round_trip_with_addresses(dgram, count):
    tx, rx, rx_addr, tx_addr = dgram
    messages = [i.to_bytes(4, "big") * (1 + i % 7) for i in range(count)]
    sent = 0
    while sent < count:                         # in chunks the receive buffer can hold
        chunk = messages[sent:sent + 500]
        assert tx.send_batch(chunk, rx_addr) == len(chunk)
        got = receive(rx, len(chunk), max_messages=1024)
        assert [bytes(d.data) for d in got] == chunk
        assert all(d.address == tx_addr and not d.truncated for d in got)
        sent += len(chunk)


def test_pairs_mixed_with_default_address(dgram):
    tx, rx, rx_addr, _ = dgram
    assert tx.send_batch([b"one", (b"two", rx_addr),
                          bytearray(b"three"), memoryview(b"four")], rx_addr) == 4
    assert [bytes(d.data) for d in receive(rx, 4)] == [b"one", b"two", b"three", b"four"]


def test_batch_items_are_kept_alive_and_sent_whole(dgram):
    """bytes are exported in place (no buffer call), everything else through the buffer
    protocol: a bytes subclass, a 2-byte-item array and bytes whose only owner is the list all
    arrive whole, and send_batch leaves no reference behind."""
    import array

    class Tagged(bytes):
        pass

    tx, rx, rx_addr, _ = dgram
    wide = array.array("H", [0x0102, 0x0304])
    only_in_list = [bytes([i]) * (i + 1) for i in range(40)]
    tagged = Tagged(b"tagged")
    before = sys.getrefcount(tagged)
    assert tx.send_batch(only_in_list + [tagged, wide], rx_addr) == 42
    assert sys.getrefcount(tagged) == before
    got = [bytes(d.data) for d in receive(rx, 42, max_messages=64)]
    assert got == [bytes([i]) * (i + 1) for i in range(40)] + [b"tagged", wide.tobytes()]


def test_unpacking_and_equality(dgram):
    tx, rx, rx_addr, tx_addr = dgram
    tx.send_batch([b"hi"], rx_addr)
    (d,) = receive(rx, 1)
    data, address = d
    assert data == b"hi" and address == tx_addr and d == (b"hi", tx_addr)
    assert isinstance(d, csock.Datagram) and isinstance(data, csock.MessageView)


def test_data_compares_equal_to_a_non_contiguous_buffer_of_the_same_bytes(dgram):
    """As bytes does (b"hello" == memoryview(b"hxexlxlxo")[::2]): == raised BufferError."""
    tx, rx, rx_addr, _ = dgram
    tx.send_batch([b"hello"], rx_addr)
    (d,) = receive(rx, 1)
    assert d.data == memoryview(b"hxexlxlxo")[::2]
    assert d.data != memoryview(b"hxexlxlxp")[::2]
    assert memoryview(b"hxexlxlxo")[::2] == d.data


def test_data_exports_one_read_only_run_of_bytes(dgram):
    """The buffer a view exports (filled in by csock, not PyBuffer_FillInfo): unsigned bytes,
    one dimension, contiguous, read-only; usable by struct, memoryview, numpy and ctypes, and
    refused to anyone who asks to write."""
    import ctypes
    import struct

    import numpy

    tx, rx, rx_addr, _ = dgram
    tx.send_batch([struct.pack(">QH", 2**40 + 7, 513)], rx_addr)
    (d,) = receive(rx, 1)
    m = memoryview(d.data)
    assert (m.format, m.itemsize, m.ndim, m.shape,
            m.strides, m.readonly, m.nbytes) == ("B", 1, 1, (10,), (1,), True, 10)
    assert m.c_contiguous and m.tolist()[-2:] == [2, 1]
    assert struct.unpack_from(">QH", d.data) == (2**40 + 7, 513)
    assert numpy.frombuffer(d.data, dtype=">u2")[-1] == 513
    with pytest.raises(TypeError):
        m[0] = 1
    with pytest.raises(TypeError, match="not writable"):
        ctypes.c_char.from_buffer(d.data)
    with pytest.raises(TypeError, match="read-write"):
        struct.pack_into(">H", d.data, 0, 1)     # asks for a writable buffer: refused
    assert bytes(d.data)[:2] == b"\x00\x00"
    m.release()


def test_datagram_attributes_are_read_only_member_slots(dgram):
    tx, rx, rx_addr, tx_addr = dgram
    tx.send_batch([b"hi"], rx_addr)
    (d,) = receive(rx, 1)
    names = ("data", "address", "truncated", "timestamp", "destination", "interface", "tos")
    for name in names:          # read as a direct load (see fastio/members.pyx)
        assert type(getattr(csock.Datagram, name)).__name__ == "member_descriptor"
        with pytest.raises(AttributeError):
            setattr(d, name, None)
        with pytest.raises(AttributeError):
            delattr(d, name)
    assert (d.data, d.address,
            d.truncated, d.timestamp, d.tos) == (b"hi", tx_addr, False, None, None)
    assert d.truncated is False


def test_truncation_is_flagged(dgram):
    tx, rx, rx_addr, _ = dgram
    tx.send_batch([b"x" * 100, b"short"], rx_addr)
    got = receive(rx, 2, bufsize=10)
    assert [(bytes(d.data), d.truncated) for d in got] == [(b"x" * 10, True), (b"short", False)]


def test_views_held_across_later_batches_stay_intact(dgram):
    tx, rx, rx_addr, _ = dgram
    held = []
    for round_ in range(50):
        payloads = [bytes([round_]) * (1 + i) for i in range(20)]
        tx.send_batch(payloads, rx_addr)
        held.append((payloads, receive(rx, 20)))
    gc.collect()
    for payloads, got in held:
        assert [bytes(d.data) for d in got] == payloads


@pytest.mark.parametrize("hold", ["all", "every_other", "none"])
def test_receive_memory_is_shared_by_calls_but_never_overwritten(dgram, hold):
    """Each recv_batch receives into the scratch slots after those earlier calls handed out
    (fastio/mmsg.pyx, BatchReceiver): across many small batches with a large max_messages,
    crossing into new memory, every view still held keeps its bytes; released ones free it."""
    tx, rx, rx_addr, _ = dgram
    held = []
    for round_ in range(400):
        payloads = [b"%04d:%02d" % (round_, i) + bytes([round_ % 256]) * (i * 3) for i in range(7)]
        tx.send_batch(payloads, rx_addr)
        got = receive(rx, 7, max_messages=1024, bufsize=64)
        assert [bytes(d.data) for d in got] == payloads
        if hold == "all" or (hold == "every_other" and round_ % 2 == 0):
            held.append((payloads, got))
    gc.collect()
    for payloads, got in held:
        assert [bytes(d.data) for d in got] == payloads


def test_released_receive_memory_is_used_again_and_held_memory_is_not(dgram):
    """Once every view of a batch is gone, the next batch is received into the same memory
    (no set-up, warm cache); while one view is held, later batches go elsewhere."""
    tx, rx, rx_addr, _ = dgram
    tx.send_batch([b"a" * 64] * 10, rx_addr)
    start = address_of(receive(rx, 10, max_messages=1024, bufsize=64)[0].data)
    for round_ in range(20):
        tx.send_batch([bytes([round_]) * 64] * 10, rx_addr)
        got = receive(rx, 10, max_messages=1024, bufsize=64)
        assert address_of(got[0].data) == start
        assert [bytes(d.data) for d in got] == [bytes([round_]) * 64] * 10
        del got
    tx.send_batch([b"y" * 64] * 10, rx_addr)
    held = receive(rx, 10, max_messages=1024, bufsize=64)[9].data
    tx.send_batch([b"z" * 64] * 10, rx_addr)
    later = receive(rx, 10, max_messages=1024, bufsize=64)
    assert address_of(later[0].data) != start
    assert bytes(held) == b"y" * 64 and bytes(later[0].data) == b"z" * 64


def test_a_caller_that_keeps_the_last_batch_alternates_between_two_scratches(dgram):
    """batch = recv_batch() in a loop holds the previous batch during the next call: when each
    call fills the scratch, the receiver takes back the one before instead of new memory."""
    tx, rx, rx_addr, _ = dgram
    previous, starts = None, []
    for round_ in range(6):
        tx.send_batch([bytes([round_]) * 1000] * 1024, rx_addr)
        batch = receive(rx, 1024, max_messages=1024, bufsize=1024)   # fills the 1 MiB scratch
        starts.append(address_of(batch[0].data))
        if previous is not None:
            assert {bytes(d.data) for d in previous} == {bytes([round_ - 1]) * 1000}
        previous = batch
    assert len(set(starts)) == 2 and starts[0] == starts[2] == starts[4]
    assert csock._fastio.scratch_allocations(rx) == 2


def test_recv_batch_returns_everything_queued_up_to_max(dgram):
    tx, rx, rx_addr, _ = dgram
    tx.send_batch([bytes([i]) for i in range(100)], rx_addr)
    time.sleep(0.05)
    first = rx.recv_batch(max_messages=30)
    assert [d.data[0] for d in first] == list(range(30))
    rest = rx.recv_batch(max_messages=1000)
    assert [d.data[0] for d in rest] == list(range(30, 100))


def test_timeout_and_non_blocking(dgram):
    tx, rx, rx_addr, _ = dgram
    rx.settimeout(0.1)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        rx.recv_batch()
    assert 0.09 <= time.monotonic() - start < 2
    rx.setblocking(False)
    with pytest.raises(BlockingIOError):
        rx.recv_batch()
    threading.Timer(0.05, tx.send_batch, args=([b"late"], rx_addr)).start()
    rx.settimeout(5)
    assert [bytes(d.data) for d in rx.recv_batch()] == [b"late"]


@pytest.mark.parametrize("timeout", [None, 5.0], ids=["blocking", "timeout"])
@pytest.mark.parametrize("gro", [False, True], ids=["plain", "gro"])
def test_recv_batch_without_waiting_takes_only_what_is_queued(dgram, timeout, gro):
    """wait=False: what is queued now, BlockingIOError at once when nothing is, whatever the
    socket's timeout (recvmmsg with MSG_DONTWAIT), on the plain and the control-message path."""
    tx, rx, rx_addr, _ = dgram
    rx.settimeout(timeout)
    start = time.monotonic()
    with pytest.raises(BlockingIOError):
        rx.recv_batch(wait=False, gro=gro)
    assert time.monotonic() - start < 1
    tx.send_batch([b"%d" % i for i in range(5)], rx_addr)
    time.sleep(0.05)
    assert [bytes(d.data) for d in rx.recv_batch(3, wait=False, gro=gro)] == [b"0", b"1", b"2"]
    assert [bytes(d.data) for d in rx.recv_batch(wait=False, gro=gro)] == [b"3", b"4"]
    with pytest.raises(BlockingIOError):
        rx.recv_batch(wait=False, gro=gro)
    assert rx.gettimeout() == timeout


def test_bad_items_send_nothing(dgram):
    tx, rx, rx_addr, _ = dgram
    for bad in ([b"ok", "text"], [b"ok", 42], [b"ok", (b"x", rx_addr, 1)]):
        with pytest.raises(TypeError):
            tx.send_batch(bad, rx_addr)
    if isinstance(rx_addr, tuple):
        with pytest.raises(OverflowError):
            tx.send_batch([b"ok", (b"x", (rx_addr[0], 70000))], rx_addr)
        with pytest.raises(csock.gaierror):
            tx.send_batch([b"ok", (b"x", ("no-such-host.invalid", 9))], rx_addr)
    rx.setblocking(False)
    with pytest.raises(BlockingIOError):
        rx.recv_batch()


def address_calls(tx, address, good):
    """Every csock call that converts address for tx, by name: send_batch's address for the
    batch, a (data, address) item alone and after an item to good, and parse_address."""
    return {"batch address": lambda: tx.send_batch([b"batch"], address),
            "pair": lambda: tx.send_batch([(b"pair", address)]),
            "pair after a good item": lambda: tx.send_batch([b"good", (b"pair", address)], good),
            "parse_address": lambda: csock._fastio.parse_address(tx.family, address)}


NUL_HOSTS = {"v4": ["127.0.0.1\0.evil.example", b"127.0.0.1\0", bytearray(b"127.0.0.1\0x"),
                    "\0", "<broadcast>\0", "\u00e9\0.example"],
             "v6": ["::1\0.evil.example", b"::1\0", "\0"]}


@pytest.mark.parametrize("kind", ["v4", "v6"])
def test_a_host_with_a_nul_is_refused_as_the_stdlib_refuses_it(kind):
    """A host is never cut at a NUL ("127.0.0.1\\0.evil.example" went to 127.0.0.1): every
    csock path raises the stdlib's TypeError, and nothing is sent."""
    family, loopback = LOOPBACK[kind]
    tx, rx = udp_pair(kind, blocking=False)
    with tx, rx, stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM) as std:
        port = rx.getsockname()[1]
        expected = "TypeError: host name must not contain null character"
        for host in NUL_HOSTS[kind]:
            calls = address_calls(tx, (host, port), (loopback, port))
            assert outcome(partial(std.sendto, b"std", (host, port))) == expected
            assert {name: outcome(call) for name, call in calls.items()} == \
                dict.fromkeys(calls, expected), repr(host)
        with pytest.raises(BlockingIOError):
            rx.recv_batch()


class _Host(str):
    """A str subclass: the stdlib encodes it with the idna codec even when it is ASCII."""


@pytest.mark.parametrize("host", ["a" * 64 + ".invalid", "a..invalid", "\u00e9" * 64 + ".invalid",
                                  "\ud800", _Host("a..invalid"), _Host("127.0.0.1"), b"a..invalid"])
def test_hosts_are_encoded_as_the_stdlib_encodes_them(host):
    """An ASCII str goes to the resolver as it is (a label the idna codec refuses is the
    resolver's gaierror, not UnicodeError); a str the codec cannot encode is TypeError."""
    tx, rx = udp_pair("v4", blocking=False)
    with tx, rx, stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as std:
        address = (host, rx.getsockname()[1])
        expected = outcome(partial(std.sendto, b"", address))
        calls = address_calls(tx, address, rx.getsockname())
        assert {name: outcome(call) for name, call in calls.items()} == \
            dict.fromkeys(calls, expected)


class _Port:
    """The receiver's port, in the addresses below."""

    def __repr__(self):
        return "PORT"


PORT = _Port()
IPV6_ADDRESSES = [("::1", PORT, *fields) for fields in IPV6_FIELDS] + [
    ("::1\0x", PORT, 1.5), ("no-such-host.invalid", 70000), ("no-such-host.invalid", PORT, -1),
    ("no-such-host.invalid", PORT, 0, 1.5), ("::1", 2**40), ("::1", 2**70, 1.5), ("::1", -1),
    ("::1", 70000, 2**31), ("::1", 1.5, 2**31), ("::1", PORT, 2**31, 1.5)]


@pytest.mark.parametrize("template", IPV6_ADDRESSES, ids=repr)
def test_ipv6_addresses_are_read_as_the_stdlib_reads_them(template):
    """flowinfo and scope_id as the stdlib's sendto takes them (a float is TypeError, never
    truncated; __index__ is taken; both wrap modulo 2**32), an address with several faults
    raising the stdlib's error for it: what is sent carries the same fields."""
    tx, rx = udp_pair("v6", blocking=False)
    with tx, rx, stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM) as std:
        port = rx.getsockname()[1]
        address = tuple(port if part is PORT else part for part in template)
        expected = outcome(partial(std.sendto, b"std", address))
        calls = address_calls(tx, address, rx.getsockname())
        assert {name: outcome(call) for name, call in calls.items()} == \
            dict.fromkeys(calls, expected)
        if expected != "ok":
            with pytest.raises(BlockingIOError):
                rx.recv_batch()
            return
        flowinfo, scope_id = (operator.index(part) & 0xFFFFFFFF
                              for part in (*address[2:], 0, 0)[:2])
        assert csock._fastio.parse_address(csock.AF_INET6, address) == (
            struct.pack("=H", csock.AF_INET6) + struct.pack("!HI", port, flowinfo)
            + stdlib_socket.inet_pton(csock.AF_INET6, "::1") + struct.pack("=I", scope_id))
        assert [bytes(d.data) for d in receive(rx, 5)] == [b"std", b"batch", b"pair", b"good",
                                                           b"pair"]


@pytest.mark.parametrize("address", [("fe80::1%lo", 9), ("fe80::1%lo", 9, 0, 0),
                                     ("fe80::1%1", 9, 0, 7), ("::1%lo", 9, 0, 3)])
def test_an_ipv6_zone_in_the_host_leaves_the_scope_id_to_the_tuple(address):
    """As the stdlib's getsockaddrarg: the name gives the address, the tuple the scope_id
    (0 when it has none); csock took the scope from the name's %zone, so the same datagram
    went out on another interface, or failed where the stdlib's went."""
    with csock.socket(csock.AF_INET6, csock.SOCK_DGRAM) as sock, \
            stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM) as std:
        sent = outcome(partial(std.sendto, b"x", address))
        assert outcome(partial(sock.send_batch, [b"x"], address)) == sent
        if "gaierror" in sent:
            return
        raw = csock._fastio.parse_address(csock.AF_INET6, address)
        assert struct.unpack_from("=I", raw, 24)[0] == (address[3] if len(address) > 3 else 0)
        assert raw[8:24] == stdlib_socket.inet_pton(csock.AF_INET6, address[0].split("%")[0])


@pytest.mark.parametrize("kind", ["v4", "v6"])
def test_each_address_of_a_batch_is_read_even_when_equal_to_another(kind):
    """A batch converts each distinct address once, but addresses only equal (port 9 and
    9.0, flowinfo 1 and Decimal(1)) are not one: the float or Decimal is refused as the
    stdlib refuses it, and nothing is sent."""
    from decimal import Decimal

    family, loopback = LOOPBACK[kind]
    tx, rx = udp_pair(kind, blocking=False)
    with tx, rx:
        port = rx.getsockname()[1]
        good = (loopback, port) if kind == "v4" else (loopback, port, 1, 0)
        unlike = [(loopback, float(port), *good[2:]), (loopback, Decimal(port), *good[2:])]
        if kind == "v6":
            unlike += [(loopback, port, 1.0, 0), (loopback, port, Decimal(1), 0),
                       (loopback, port, 1, 0.0)]
        for address in unlike:
            assert address == good
            with pytest.raises(TypeError):
                tx.send_batch([(b"good", good), (b"unlike", address)])
            with pytest.raises(TypeError):
                tx.send_batch([b"good", (b"unlike", address)], good)
        with pytest.raises(BlockingIOError):
            rx.recv_batch()
        assert tx.send_batch([(b"good", good), (b"alike", tuple(good))], good) == 2


# RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP: the kernel (pid 0) answers with every link
LINK_DUMP = struct.pack("=LHHLL", 32, 18, 0x301, 1, 0) + struct.pack("=BxHiII", 0, 0, 0, 0, 0)


def test_netlink_addresses_go_and_come_back_as_the_stdlib_gives_them():
    """(pid, groups) out and back; they came back as (family, raw sockaddr), and sending to
    one was a ValueError."""
    def dump(module, send):
        with module.socket(csock.AF_NETLINK, csock.SOCK_DGRAM, 0) as sock:
            sock.settimeout(5)
            send(sock)
            if module is csock:
                return [d.address for d in sock.recv_batch(1, 65535)]
            return [sock.recvfrom(65535)[1]]

    expected = dump(stdlib_socket, lambda s: s.sendto(LINK_DUMP, (0, 0)))
    assert expected == [(0, 0)]
    assert dump(csock, lambda s: s.send_batch([(LINK_DUMP, (0, 0))])) == expected
    assert dump(csock, lambda s: s.send_batch([LINK_DUMP], (0, 0))) == expected
    with stdlib_socket.socket(csock.AF_NETLINK, csock.SOCK_DGRAM, 0) as std, \
            csock.socket(csock.AF_NETLINK, csock.SOCK_DGRAM, 0) as sock:
        for bad in ["0", (0,), (0, 0, 0), (0, 1.5)]:
            assert outcome(partial(sock.send_batch, [b"x"], bad)) == outcome(
                partial(std.sendto, b"x", bad)), bad


@pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET sockets need CAP_NET_RAW (root)")
def test_packet_addresses_go_and_come_back_as_the_stdlib_gives_them():
    """(ifname, proto, pkttype, hatype, addr), as the stdlib's recvfrom and sendto: a frame
    sent with send_batch to ("lo", proto) arrives, and each receive names its sender alike."""
    import csock.uring

    proto = 0x88B5                                  # IEEE 802 local experimental
    kind = stdlib_socket.htons(proto)
    with stdlib_socket.socket(csock.AF_PACKET, csock.SOCK_DGRAM, kind) as std, \
            csock.socket(csock.AF_PACKET, csock.SOCK_DGRAM, kind) as sock, \
            csock.socket(csock.AF_PACKET, csock.SOCK_DGRAM, 0) as sender:
        for s in (std, sock):
            s.bind(("lo", proto))
            s.settimeout(5)
        assert sender.send_batch([(b"frame one", ("lo", proto))]) == 1
        assert sender.send_batch([b"frame two"], ("lo", proto, 0, 0, b"\0" * 6)) == 1
        seen = [std.recvfrom(100) for _ in range(2)]
        assert seen == [(b"frame one", ("lo", proto, 0, 772, b"\0" * 6)),
                        (b"frame two", ("lo", proto, 0, 772, b"\0" * 6))]
        assert [(bytes(d.data), d.address) for d in receive(sock, 2)] == seen
        if csock.uring.available():
            sender.send_batch([b"frame three"], ("lo", proto))
            got = [(bytes(d.data), d.address) for d in csock.uring.recv_many([sock])[0]]
            assert got == [(b"frame three", seen[0][1])]
        for bad in [("lo",), ("no-such-if0", proto), ("lo", 70000), ("lo", proto, 0, 0, b"9" * 9),
                    ("lo", 1.5), (b"lo", proto), "lo", ("lo\0", proto)]:
            assert outcome(partial(sock.send_batch, [b"x"], bad)) == outcome(
                partial(std.sendto, b"x", bad)), bad


def test_any_bytes_like_unix_path_and_a_v6_broadcast_are_read_as_the_stdlib_reads_them(tmp_path):
    """An AF_UNIX path in an array (any bytes-like object) was a TypeError; "<broadcast>" on
    an AF_INET6 socket went to getaddrinfo (gaierror) where the stdlib says the family is
    mismatched."""
    import array

    path = str(tmp_path / "rx.sock")
    with csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM) as rx, \
            csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM) as tx:
        rx.bind(path)
        assert tx.send_batch([b"via an array"], array.array("b", path.encode())) == 1
        assert [bytes(d.data) for d in receive(rx, 1)] == [b"via an array"]
    with csock.socket(csock.AF_INET6, csock.SOCK_DGRAM) as sock, \
            stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM) as std:
        for address in [("<broadcast>", 9), ("<broadcast>", 9, 0, 0)]:
            assert outcome(partial(sock.send_batch, [b"x"], address)) == outcome(
                partial(std.sendto, b"x", address)) == "OSError: address family mismatched"


def test_a_strided_unix_address_is_refused(tmp_path):
    path = str(tmp_path / "rx.sock").encode()
    with csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM) as rx, \
            csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM) as tx:
        rx.bind(path)
        # the path reversed: read as if contiguous it would run past the buffer's end
        for strided in (memoryview(path[::-1])[::-1], memoryview(path * 2)[::2]):
            with pytest.raises(BufferError):
                tx.send_batch([b"never"], strided)
            with pytest.raises(BufferError):
                tx.send_batch([(b"never", strided)])
        assert tx.send_batch([b"sent"], memoryview(path)) == 1
        assert [bytes(d.data) for d in receive(rx, 1)] == [b"sent"]
        rx.setblocking(False)
        with pytest.raises(BlockingIOError):
            rx.recv_batch()


class _ShrinkingHost(str):
    """An address part whose __hash__ (run by send_batch while it parses the batch) empties
    the list being sent."""
    batch: list = []

    def __hash__(self):
        self.batch.clear()
        return str.__hash__(self)


class _ShrinkingPort:
    """A port whose __index__ empties the list being sent."""
    batch: list = []

    def __init__(self, port):
        self.port = port

    def __index__(self):
        self.batch.clear()
        return self.port


@pytest.mark.parametrize("where", ["address", "port"])
def test_a_batch_emptied_by_user_code_during_send_batch_is_sent_as_passed(dgram, where):
    tx, rx, rx_addr, _ = dgram
    if where == "port" and not isinstance(rx_addr, tuple):
        pytest.skip("AF_UNIX addresses have no port")
    payloads = [b"%03d" % i for i in range(200)]
    batch = list(payloads)
    if where == "address":
        target = (
            (_ShrinkingHost(rx_addr[0]), *rx_addr[1:])
            if isinstance(rx_addr, tuple)
            else _ShrinkingHost(rx_addr)
        )
        _ShrinkingHost.batch = batch
    else:
        target = (rx_addr[0], _ShrinkingPort(rx_addr[1]), *rx_addr[2:])
        _ShrinkingPort.batch = batch
    batch[0] = (payloads[0], target)
    # the items are the ones passed when the call began: all of them go out, in order
    assert tx.send_batch(batch, rx_addr) == 200
    assert batch == []
    assert [bytes(d.data) for d in receive(rx, 200)] == payloads


def test_absurd_arguments(dgram):
    tx, rx, _, _ = dgram
    for kwargs in ({"max_messages": 10**12}, {"max_messages": 0},
                   {"bufsize": -1}, {"bufsize": 10**12}):
        with pytest.raises((ValueError, OverflowError)):
            rx.recv_batch(**kwargs)


def test_bufsize_zero_takes_each_datagram_as_empty_and_flags_the_cut(dgram):
    """On a datagram socket bufsize=0 is allowed, as recvfrom(0) is: each datagram is taken,
    its data cut to nothing and flagged (an empty datagram is not cut), its sender kept."""
    tx, rx, rx_addr, tx_addr = dgram
    tx.send_batch([b"abc", b"", b"z"], rx_addr)
    got = receive(rx, 3, bufsize=0)
    assert [(bytes(d.data), d.truncated) for d in got] == [(b"", True), (b"", False), (b"", True)]
    assert all(d.address == tx_addr for d in got)


def test_connected_peer_and_address_none():
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    with a, b:
        assert a.send_batch([b"1", b"22"]) == 2
        got = receive(b, 2)
        assert [(bytes(d.data), d.address) for d in got] == [(b"1", None), (b"22", None)]


def test_send_batch_cut_by_a_kernel_send_timeout_raises():
    """Blocking mode: send_batch sends them all or raises (API §4). SO_SNDTIMEO passing with
    the receiver's queue full is BlockingIOError (API §0), with .sent the datagrams that went
    first; the receiver has exactly those, in order."""
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    with a, b:
        a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDTIMEO, struct.pack("@ll", 0, 50_000))
        messages = [i.to_bytes(4, "big") * 250 for i in range(3000)]     # 1000 bytes each
        with pytest.raises(BlockingIOError) as info:
            a.send_batch(messages)
        sent = info.value.sent
        assert 0 < sent < 3000
        assert [bytes(d.data) for d in receive(b, sent)] == messages[:sent]
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv_batch()
        a.setblocking(False)                # non-blocking: the count that went, as documented
        assert 0 < a.send_batch(messages) < 3000


def test_abstract_unix_addresses():
    name = b"\0csock-test-" + os.urandom(4).hex().encode()
    with csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM) as rx, \
            csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM) as tx:
        rx.bind(name)
        tx.bind(name + b"-tx")
        tx.send_batch([b"abstract"], name)
        (d,) = receive(rx, 1)
        assert d.data == b"abstract" and d.address == name + b"-tx"


def test_partial_failure_returns_count_then_raises():
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    with rx, tx:
        # the second datagram is too large for UDP: the kernel sends 1 and fails on the next
        assert tx.send_batch([b"ok", b"x" * 70000, b"after"], rx.getsockname()) == 1
        with pytest.raises(OSError) as info:
            tx.send_batch([b"x" * 70000, b"after"], rx.getsockname())
        assert info.value.errno == 90           # EMSGSIZE
        assert [bytes(d.data) for d in receive(rx, 1)] == [b"ok"]


def test_a_deferred_error_belongs_to_its_socket_and_is_raised_once():
    """The error kept after a partial batch lives in that socket's own state: another socket
    of the same class sends normally, and the error is raised by the next call only."""
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    other = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    with rx, tx, other:
        assert type(tx).__slots__ == ()         # no per-feature slots: one SocketState
        assert tx.send_batch([b"ok", b"x" * 70000], rx.getsockname()) == 1
        assert other.send_batch([b"other"], rx.getsockname()) == 1
        with pytest.raises(OSError) as info:
            tx.send_batch([b"again"], rx.getsockname())
        assert info.value.errno == 90           # EMSGSIZE
        assert tx.send_batch([b"after"], rx.getsockname()) == 1
        assert [bytes(d.data) for d in receive(rx, 3)] == [b"ok", b"other", b"after"]


def test_close_drops_a_deferred_error_and_the_next_call_raises_ebadf():
    """An error deferred to the socket's next send is csock's, kept in user space: close()
    drops it, and every later call raises EBADF, as on a closed stdlib socket."""
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    with rx, tx:
        assert tx.send_batch([b"ok", b"x" * 70000], rx.getsockname()) == 1   # EMSGSIZE kept
        tx.close()
        with pytest.raises(OSError) as info:
            tx.send_batch([b"again"], rx.getsockname())
        assert info.value.errno == errno.EBADF


def test_deferred_error_is_raised_by_the_next_call():
    port_owner = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    port_owner.bind(("127.0.0.1", 0))
    dead = port_owner.getsockname()
    port_owner.close()                          # nothing listens there: ICMP port unreachable
    with csock.socket(csock.AF_INET, csock.SOCK_DGRAM) as tx:
        tx.connect(dead)
        tx.send_batch([b"a"])
        time.sleep(0.05)                        # the ICMP error is now pending on the socket
        with pytest.raises(ConnectionRefusedError):
            tx.send_batch([b"b", b"c"])


def test_non_blocking_send_returns_count_moved():
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    with a, b:
        a.setblocking(False)
        sent = a.send_batch([b"x" * 1000] * 100_000)
        assert 0 < sent < 100_000
        with pytest.raises(BlockingIOError):
            a.send_batch([b"x"])


# --- recv_batch_into: the caller's buffer, lengths only ---------------------------------------

def test_recv_batch_into_places_each_datagram_in_its_slot(dgram):
    tx, rx, rx_addr, _ = dgram
    payloads = [b"", b"one", b"t" * 64, b"L" * 100, b"five"]
    tx.send_batch(payloads, rx_addr)
    buf = bytearray(b"." * 64 * 8)
    lengths = rx.recv_batch_into(buf, 64)
    assert lengths == [0, 3, 64, 100, 4]                      # 100 > 64: cut, and it shows
    assert buf[64:67] == b"one" and buf[67:128] == b"." * 61  # the rest of a slot is untouched
    assert buf[128:192] == b"t" * 64 and buf[192:256] == b"L" * 64 and buf[256:260] == b"five"


def test_recv_batch_into_takes_what_fits_and_leaves_the_rest_queued(dgram):
    tx, rx, rx_addr, _ = dgram
    tx.send_batch([bytes([i]) * 8 for i in range(10)], rx_addr)
    buf = bytearray(8 * 4 + 5)                                  # room for 4 whole slots
    got = []
    for expected in (4, 4, 2):
        lengths = rx.recv_batch_into(buf, 8)
        assert lengths == [8] * expected
        got += [buf[i * 8] for i in range(expected)]
    tx.send_batch([bytes([i]) * 8 for i in range(10, 13)], rx_addr)
    assert rx.recv_batch_into(buf, 8, max_messages=2) == [8, 8]
    assert rx.recv_batch_into(memoryview(buf)[8:], 8) == [8]   # slot 0 at the view's start
    assert got + [buf[0], buf[8], buf[8]] == list(range(10)) + [10, 12, 12]
    assert buf[0:8] == bytes([10]) * 8 and buf[8:16] == bytes([12]) * 8


def test_recv_batch_into_follows_the_buffer_and_bufsize_it_is_given(dgram):
    """Headers are kept per (memory, bufsize): a new buffer or bufsize is laid out anew."""
    tx, rx, rx_addr, _ = dgram
    for bufsize, buf in ((16, bytearray(64)), (8, bytearray(64)), (32, bytearray(64))):
        for _ in range(2):                  # the same buffer and bufsize again
            tx.send_batch([b"%d" % i * bufsize for i in range(2)], rx_addr)
            assert rx.recv_batch_into(buf, bufsize) == [bufsize, bufsize]
            assert bytes(buf[:2 * bufsize]) == b"0" * bufsize + b"1" * bufsize


def test_recv_batch_into_timeout_non_blocking_and_bad_arguments(dgram):
    tx, rx, rx_addr, _ = dgram
    buf = bytearray(256)
    rx.settimeout(0.1)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        rx.recv_batch_into(buf, 64)
    assert 0.09 <= time.monotonic() - start < 2
    rx.setblocking(False)
    with pytest.raises(BlockingIOError):
        rx.recv_batch_into(buf, 64)
    for args, error in (((b"read-only" * 10, 8), TypeError), ((bytearray(10), 64), ValueError),
                        ((buf, 0), ValueError), ((buf, -1), ValueError),
                        ((buf, 10**12), ValueError),
                        ((buf, 64, 0), ValueError), (("text", 8), TypeError)):
        with pytest.raises(error):
            rx.recv_batch_into(*args)
    tx.send_batch([b"still here"], rx_addr)
    rx.settimeout(5)
    assert rx.recv_batch_into(buf, 64) == [10] and buf[:10] == b"still here"


@pytest.mark.parametrize("buffer", BAD_RECEIVE_BUFFERS)
def test_recv_batch_into_a_bad_buffer_is_recv_intos_type_error_first(buffer):
    """As recv_into's (the stdlib's): TypeError for a buffer it cannot write, a released view
    too (it was ValueError), before a bad bufsize or max_messages, a UDP_GRO socket or a
    closed one; nothing is taken."""
    make = BAD_RECEIVE_BUFFERS[buffer]
    tx, rx = udp_pair("v4", blocking=False)
    with tx, rx, stdlib_socket.socket(fileno=os.dup(rx.fileno())) as std:
        tx.send_batch([b"queued"], rx.getsockname())
        expected = outcome(lambda: std.recv_into(make())).replace("recv_into", "recv_batch_into")
        assert expected.startswith("TypeError: recv_batch_into() argument 1 must be read-write")
        for args in ((8,), (0,), (-1,), (2**70,), (1.5,), (8, 0), (8, -1), (8, 2**70)):
            assert outcome(partial(rx.recv_batch_into, make(), *args)) == expected, args
        if hasattr(csock, "UDP_GRO"):
            rx.setsockopt(csock.IPPROTO_UDP, csock.UDP_GRO, 1)
            assert outcome(lambda: rx.recv_batch_into(make(), 8)) == expected
            rx.setsockopt(csock.IPPROTO_UDP, csock.UDP_GRO, 0)
        assert [bytes(d.data) for d in rx.recv_batch()] == [b"queued"]
        rx.close()
        assert outcome(lambda: rx.recv_batch_into(make(), 8)) == expected


def test_recv_batch_into_from_two_threads_at_once():
    """Two threads receiving into their own buffers on one socket (the second gets headers of
    its own while the first holds the socket's): every datagram lands once, whole."""
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 1 << 20)
    b.settimeout(0.5)
    got: list[list[bytes]] = [[], []]

    def drain(mine: list[bytes]) -> None:
        buf = bytearray(32 * 64)
        while True:
            try:
                lengths = b.recv_batch_into(buf, 32)
            except TimeoutError:
                return
            mine += [bytes(buf[i * 32:i * 32 + n]) for i, n in enumerate(lengths)]

    with a, b:
        threads = [threading.Thread(target=drain, args=(got[k],)) for k in range(2)]
        for t in threads:
            t.start()
        sent = [b"%06d" % i * 5 for i in range(20_000)]
        for start in range(0, len(sent), 500):
            a.send_batch(sent[start:start + 500])
        for t in threads:
            t.join(30)
    assert sorted(got[0] + got[1]) == sent                      # each once, none cut or mixed


def test_recv_batch_into_refuses_a_gro_socket():
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    with rx:
        rx.bind(("127.0.0.1", 0))
        if not rx.enable_gro():
            pytest.skip("UDP_GRO is not available here")
        with pytest.raises(ValueError, match="recv_batch"):
            rx.recv_batch_into(bytearray(64), 64)


@needs_strace
def test_each_batch_is_one_system_call(tmp_path):
    code = textwrap.dedent("""
        import csock
        a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
        a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 1 << 20)
        assert a.send_batch([b"m" * 8] * 500) == 500
        assert len(b.recv_batch(max_messages=500)) == 500
        assert a.send_batch([b"n" * 8] * 500) == 500
        assert b.recv_batch_into(bytearray(8 * 1024), 8) == [8] * 500
    """)
    trace, _ = strace(tmp_path, code, "sendmmsg,recvmmsg,sendmsg,sendto,recvmsg,recvfrom")
    calls = [line.split("(")[0].split()[-1] for line in trace.splitlines() if "(" in line]
    assert calls.count("sendmmsg") == 2 and calls.count("recvmmsg") == 2, calls
    assert not {"sendmsg", "sendto", "recvmsg", "recvfrom"} & set(calls), calls


@needs_strace
@needs_recvfrom_nr
def test_a_receive_that_keeps_finding_nothing_stops_trying_first(tmp_path):
    """A blocking recv is first tried with MSG_DONTWAIT and the GIL held; when that finds
    nothing (a ping-pong's reply is never there yet) the next 7 receives on that fd block at
    once, 15 after a second miss in a row, then 31, 63, ... (io.pyx, HeldHint): 120 late
    replies cost 4 extra calls (tries 1, 9, 25 and 57), not 120 (15 with a fixed 7)."""
    code = LATE_WRITER + textwrap.dedent("""
        def late_replies():
            for i in range(120):
                wait_for_blocked_recv(i)
                a.send(b"%d" % i)
        with writing(late_replies):
            for i in range(120):
                received.append(b.recv(8))
        assert received == [b"%d" % i for i in range(120)]
    """)
    trace, _ = strace(tmp_path, code, "recvfrom")
    calls = [line for line in trace.splitlines() if "recvfrom(" in line and "resumed" not in line]
    missed = [line for line in calls if "EAGAIN" in line]
    assert len(missed) == 4, missed
    assert len(calls) - len(missed) == 120


@needs_strace
@needs_recvfrom_nr
def test_a_receive_that_finds_data_ends_the_back_off(tmp_path):
    """After a try with the GIL held finds data, the next miss backs off from 7 again: 10 late
    replies (probes at tries 1 and 9, then 15 receives block at once), a burst of 40 (sent while
    the 11th receive blocks; the 25th probes and finds data), 12 late replies: 2 probes in the
    last phase (its tries 1 and 9), where a back-off that never reset would make 1."""
    code = LATE_WRITER + textwrap.dedent("""
        def writer():
            for i in range(10):
                wait_for_blocked_recv(i)
                a.send(b"late")
            wait_for_blocked_recv(10)                 # its 11th receive blocks at once
            for i in range(40):
                a.send(b"burst")
            for i in range(12):
                wait_for_blocked_recv(50 + i)
                a.send(b"late")
        with writing(writer):
            for i in range(50):
                received.append(b.recv(8))
            os.getpid()                               # the marker in the trace
            for i in range(12):
                received.append(b.recv(8))
        assert received == [b"late"] * 10 + [b"burst"] * 40 + [b"late"] * 12
    """)
    trace, _ = strace(tmp_path, code, "recvfrom,getpid")
    lines = trace.splitlines()
    marker = max(i for i, line in enumerate(lines) if "getpid()" in line)
    last_phase = [line for line in lines[marker:] if "recvfrom(" in line and "EAGAIN" in line]
    assert len(last_phase) == 2, last_phase


@pytest.mark.parametrize("ending", ["receiver reads", "sender closed"])
def test_blocked_send_batch_to_a_path_sleeps_instead_of_spinning(tmp_path, ending):
    """An unconnected AF_UNIX sender's poll(2) reports room in its own buffer, not in the
    receiver's full queue: a blocking send_batch must sleep, not loop on poll and EAGAIN at
    100 % CPU, and then deliver every datagram in order; and close() from another thread
    still wakes it (EBADF), as it wakes every csock send loop waiting for room."""
    path = str(tmp_path / "rx")
    with csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM) as rx, \
            csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM) as tx:
        rx.bind(path)
        queued = 0
        tx.setblocking(False)
        while True:                             # fill the receiver's queue
            try:
                tx.sendto(b"fill", path)
            except BlockingIOError:
                break
            queued += 1
        tx.setblocking(True)
        items = [(b"item %d" % i, path) for i in range(40)]
        thread, box = outcome_of(partial(tx.send_batch, items))
        cpu_before = time.process_time()
        thread.join(1.0)
        spent = time.process_time() - cpu_before
        assert thread.is_alive()                # blocked: the queue is full
        assert spent < 0.3, f"{spent:.2f} s of CPU while blocked for 1 s"
        if ending == "sender closed":
            tx.close()
            thread.join(5)
            assert not thread.is_alive()
            assert isinstance(box[0], OSError) and box[0].errno == errno.EBADF, box
            return
        got = []
        rx.settimeout(5)
        while len(got) < queued + len(items):
            got.append(rx.recv(64))
        thread.join(5)
        assert box == [len(items)]
        assert got == [b"fill"] * queued + [data for data, _ in items]


class Interrupted(Exception):
    pass


# A test that takes SIGALRM (the signal pytest-timeout's default method times tests with) is
# timed by a watchdog thread instead, so that a regression fails the run rather than hangs it.
@pytest.mark.timeout(120, method="thread")
def test_signal_stops_a_blocked_send_batch_that_made_progress():
    """sendmmsg(2) interrupted after some datagrams returns a count, not EINTR: the handler
    must still run before csock blocks again (Ctrl-C works on long batches)."""
    import select
    import signal

    def handler(signum, frame):
        raise Interrupted

    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    main = threading.get_ident()

    def interrupt_once_datagrams_went_out():
        # Not a fixed delay: on a loaded machine the batch's checks outlasted 0.2 s, the
        # signal came before any datagram went out, and recv_batch below waited for ever.
        select.select([b], [], [], 10)
        time.sleep(0.1)                                   # the queue fills, the send blocks
        signal.pthread_kill(main, signal.SIGALRM)         # (its thread's sendmmsg: EINTR)

    old = signal.signal(signal.SIGALRM, handler)
    interrupter = threading.Thread(target=interrupt_once_datagrams_went_out)
    try:
        interrupter.start()
        start = time.monotonic()
        with pytest.raises(Interrupted):
            a.send_batch([b"x" * 512] * 1_000_000)      # fills the queue, then blocks
        assert time.monotonic() - start < 15
        b.settimeout(5)
        assert len(b.recv_batch(max_messages=4096)) > 0  # some went out before the signal
    finally:
        interrupter.join(15)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()


@pytest.mark.timeout(120, method="thread")      # takes SIGALRM, pytest-timeout's own
def test_signal_during_a_long_batch_copy_stops_the_first_blocking_send():
    """A signal that lands while csock copies a long batch (GIL held, no bytecode runs) must
    have its handler run before the first sendmmsg(2) blocks on a full queue: nothing would
    interrupt that sleep. (A drainer thread ends the sleep after 10 s if csock gets it wrong.)"""
    import signal

    def handler(signum, frame):
        raise Interrupted

    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    a.setblocking(False)
    while True:                                          # fill the peer's queue
        try:
            a.send(b"f" * 512)
        except BlockingIOError:
            break
    a.setblocking(True)
    batch = [b"x" * 512] * 1_000_000                     # its checks outlast the 1 ms alarm
    rescue = threading.Timer(10, lambda: b.recv_batch(max_messages=4096))
    old = signal.signal(signal.SIGALRM, handler)
    try:
        rescue.start()
        start = time.monotonic()
        with pytest.raises(Interrupted):
            signal.setitimer(signal.ITIMER_REAL, 0.001)
            a.send_batch(batch)
        assert time.monotonic() - start < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        rescue.cancel()
        a.close()
        b.close()


def drain(rx):
    """Every datagram queued on rx (and kept by it), as bytes, without waiting."""
    timeout = rx.gettimeout()
    rx.setblocking(False)
    got = []
    try:
        while True:
            got += [bytes(d.data) for d in rx.recv_batch(1024)]
    except BlockingIOError:
        return got
    finally:
        rx.settimeout(timeout)


# takes SIGALRM (pytest-timeout's own method): timed by a watchdog thread instead
@pytest.mark.timeout(120, method="thread")
def test_a_handler_raising_between_the_recvmmsg_calls_of_one_recv_batch_loses_nothing(dgram):
    """recv_batch(max_messages > 1024) takes 1024 datagrams with its first recvmmsg(2); a
    signal handler that raises before the next one ends the call, but not at the cost of
    what it took: the socket keeps those, and its next recv_batch returns them first."""
    import signal

    def handler(signum, frame):
        raise Interrupted

    tx, rx, rx_addr, _ = dgram
    rx.settimeout(5)
    main = threading.get_ident()
    go, signalled, done = threading.Event(), threading.Event(), []

    def interrupter():
        # Woken (Event.set keeps the GIL) just before recv_batch: it gets the GIL when the
        # first recvmmsg releases it, and the signal lands while that recvmmsg runs.
        while go.wait(60) and not done:
            go.clear()
            signal.pthread_kill(main, signal.SIGALRM)
            signalled.set()

    old = signal.signal(signal.SIGALRM, handler)
    thread = threading.Thread(target=interrupter)
    thread.start()
    hits = 0
    try:
        for _ in range(30):
            sent = [b"%06d" % i for i in range(3000)]
            assert tx.send_batch(sent, rx_addr) == len(sent)
            signalled.clear()
            batch = None
            try:
                go.set()
                batch = rx.recv_batch(4000, 256)
                signalled.wait(10)              # a miss: the handler runs here (at the latest
                time.sleep(0.01)                # right after the sleep), the batch in hand
            except Interrupted:
                hits += batch is None and csock._fastio.pending_datagrams(rx) > 0
            got = [bytes(d.data) for d in batch or []] + drain(rx)
            assert got == sent
            if hits >= 3:
                break
        assert hits, "the handler never raised inside recv_batch"
    finally:
        done.append(True)
        go.set()
        thread.join(10)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.timeout(120, method="thread")      # takes SIGALRM, pytest-timeout's own
def test_a_signal_landing_during_recv_batch_has_its_handler_run_before_the_batch_is_out(dgram):
    """A handler for a signal that lands while recv_batch runs (here a non-blocking call
    whose recvmmsg(2) keeps the GIL, and so runs no handler) runs inside recv_batch, while
    the socket can still keep the datagrams: after the return, the interpreter would run it
    with the batch on its stack, and drop the batch. Nor may it run halfway through the
    batch's Datagrams (an AF_UNIX sender's path was decoded by os.fsdecode, Python code). The
    next recv_batch returns them."""
    import signal

    def handler(signum, frame):
        raise Interrupted

    tx, rx, rx_addr, tx_addr = dgram
    old = signal.signal(signal.SIGALRM, handler)
    try:
        sent = [b"%03d" % i for i in range(8)]
        assert tx.send_batch(sent, rx_addr) == len(sent)
        rx.setblocking(False)
        with pytest.raises(Interrupted):
            call_as_a_signal_lands(functools.partial(rx.recv_batch, 64, 1024))
        assert csock._fastio.pending_datagrams(rx) == len(sent)
        first = rx.recv_batch(5)
        assert [(bytes(d.data), d.address) for d in first] == [(m, tx_addr) for m in sent[:5]]
        assert drain(rx) == sent[5:]
    finally:
        signal.signal(signal.SIGALRM, old)


def test_eintr_storm_during_batches_loses_and_duplicates_nothing():
    import signal

    ticks = []
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    total, got = 200_000, []

    def drain():
        while len(got) < total:
            got.extend(int.from_bytes(d.data, "big") for d in b.recv_batch(max_messages=1024))

    old = signal.signal(signal.SIGALRM, lambda *args: ticks.append(1))
    reader = threading.Thread(target=drain)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
        reader.start()
        sent = 0
        while sent < total:
            chunk = [i.to_bytes(4, "big") for i in range(sent, min(total, sent + 5000))]
            assert a.send_batch(chunk) == len(chunk)
            sent += len(chunk)
        reader.join(60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()
    assert got == list(range(total))
    assert len(ticks) > 10


def _mapped_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))


def test_a_small_bufsize_call_does_not_size_a_later_calls_scratch():
    """The scratch a call lays out is sized from that call, not from the slot count an
    earlier call with many small slots left behind (which made recv_batch(1, 1 MiB) map
    4 GiB, and recv_batch(4, 16 MiB) a MemoryError)."""
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("127.0.0.1", 0))
        tx.connect(rx.getsockname())
        tx.send(b"a")
        assert [bytes(d.data) for d in rx.recv_batch(1024, 256)] == [b"a"]
        before = _mapped_kib()
        tx.send(b"b")
        assert [bytes(d.data) for d in rx.recv_batch(1, 1 << 20)] == [b"b"]
        assert _mapped_kib() - before < 64 * 1024
        tx.send(b"c")
        assert [bytes(d.data) for d in rx.recv_batch(4, 1 << 24)] == [b"c"]


def test_a_timeout_after_part_of_a_batch_says_how_many_went():
    """send_batch with a timeout sends them all or raises TimeoutError; when some went out
    first, the error's .sent says how many (a retry of the rest duplicates nothing). (An
    AF_UNIX receiver's queue fills; UDP on loopback drops instead of blocking.)"""
    tx, rx = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    with tx, rx:
        tx.settimeout(0.3)
        with pytest.raises(TimeoutError) as caught:
            tx.send_batch([b"%06d" % i for i in range(100_000)])
        rx.setblocking(False)
        arrived = []
        while True:
            try:
                arrived += [bytes(d.data) for d in rx.recv_batch(1024)]
            except BlockingIOError:
                break
        assert arrived and caught.value.sent == len(arrived)
        assert arrived == [b"%06d" % i for i in range(len(arrived))]


@pytest.mark.asan_unsafe
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_during_a_recv_batch_reuses_the_sockets_receiver():
    """fork() while a thread of the parent waits in recv_batch: the child inherited the
    socket's receiver marked busy, for ever (no thread of the child uses it), and each of its
    recv_batch calls made and mapped a fresh one (about 15 page faults a call)."""
    a, b = csock.socketpair(type=csock.SOCK_DGRAM)
    with a, b:
        b.send(b"first")
        a.recv_batch(64, 65535)                             # the socket's receiver exists
        waiting = threading.Thread(target=lambda: a.recv_batch(64, 65535))
        waiting.start()
        time.sleep(0.2)                                     # (inside recvmmsg now)
        go_read, go_write = os.pipe()
        pid = os.fork()
        if pid == 0:                                        # the child
            code = 1
            try:
                os.read(go_read, 1)                         # once the parent's call is over
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                for _ in range(1000):
                    b.send_batch([b"x" * 100] * 8)
                    a.recv_batch(64, 65535)
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
                code = 0 if faults < 1000 else 2
            finally:
                os._exit(code)
        b.send(b"last")
        waiting.join(10)
        os.write(go_write, b"g")
        os.close(go_read)
        os.close(go_write)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
