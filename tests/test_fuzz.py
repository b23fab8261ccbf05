"""Fuzzing that reaches csock's C code: structure-aware hypothesis strategies, and a short
atheris run of every decoder.

The approach chosen for the C code is structure-aware hypothesis strategies run under the
sanitizer build. atheris (libFuzzer) steers its mutations by coverage, and it gets coverage
only from the Python code it instruments: the Cython parsers are native code built without
-fsanitize=fuzzer, so for them it mutates blind and rarely gets past the first length check.
Building the extension with libFuzzer's coverage instrumentation would need clang and a
libFuzzer-linked interpreter, which neither this project's CI nor its users have. Instead the
strategies below build valid inputs field by field (packets of every layer with options and
extension headers, IP in IP, SPP records, frames, socket addresses, send batches), then
mutate them where the decoders branch (version nibbles, header and total lengths, length
prefixes, truncation points, the kind and offset of the buffer), so every example reaches the
deep paths that random bytes do not. They run unmarked: in the normal suite and in
.ci/sanitizers (``-m "not slow and not asan_unsafe"``, ASan + UBSan + Cython bounds checks),
where an out-of-bounds access aborts at once. Example counts are bounded (about 10 s in
all on a normal build).

The atheris run (tests/fuzz_driver.py) stays for what it does well: long runs on the Python side,
and a crash watch of the native side.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import csock
from csock import SPPHeader, _fastio
from csock.packet import ICMP, TCP, UDP, ICMPv6, IPv4, IPv6, Layer, PacketError, parse

from .children import child_env
from .strategies import extension_chains, icmp6s, icmps, ipv4s, ipv6s, payloads, tcps, u8, u16, udps

FUZZ = Path(__file__).parent / "fuzz_driver.py"
FAST = settings(deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- packets: built field by field, then mutated where the parsers branch -------------------

@st.composite
def stacked_packets(draw):
    """An IPv4 or IPv6 packet (with options, or extension headers on the innermost IPv6),
    sometimes IP in IP, over UDP, TCP or ICMP(v6), with a payload."""
    ips = [draw(st.one_of(ipv4s, ipv6s)) for _ in range(draw(st.integers(1, 3)))]
    inner = ips[-1]
    if isinstance(inner, IPv6) and draw(st.booleans()):
        nh, ext = draw(extension_chains())          # a chain that ends in UDP
        inner.ext, inner.nh = ext, (nh if ext else None)
        upper = draw(udps)
    else:
        upper = draw(st.one_of(udps, tcps, icmp6s if isinstance(inner, IPv6) else icmps))
    p = ips[0]
    for ip in ips[1:]:
        p = p / ip
    return p / upper / draw(payloads)


def header_spans(p: Layer) -> list[tuple[Layer, int, int]]:
    """(layer, start, header length) for each layer of a packet, outermost first."""
    spans, start, layer = [], 0, p
    while isinstance(layer, Layer):
        under = layer.payload
        header = len(layer) - (len(under) if isinstance(under, Layer) else len(bytes(under)))
        spans.append((layer, start, header))
        start += header
        layer = under
    return spans


# The bytes each layer's parser branches on (offsets in its header): version and lengths.
BRANCH_OFFSETS = {IPv4: (0, 2, 3, 6, 9), IPv6: (0, 4, 5, 6, 40, 41, 42, 43), UDP: (4, 5),
                  TCP: (12,), ICMP: (), ICMPv6: ()}


@st.composite
def mutated_packets(draw):
    """(first layer name, bytes): a stacked packet with some of its branch bytes rewritten,
    maybe cut short or given trailing bytes."""
    p = draw(stacked_packets())
    raw = bytearray(bytes(p))
    spans = header_spans(p)
    for _ in range(draw(st.integers(0, 3))):
        layer, start, _ = draw(st.sampled_from(spans))
        offsets = BRANCH_OFFSETS[type(layer)]
        if offsets:
            at = start + draw(st.sampled_from(offsets))
            if at < len(raw):
                raw[at] = draw(st.sampled_from([0, 1, 4, 5, 6,
                                                0x45, 0x4F, 0x60, 0x7F, 0x80, 0xFF]) | u8)
    edit = draw(st.sampled_from(["none", "cut", "cut-in-header", "trail"]))
    if edit == "cut":
        del raw[draw(st.integers(0, len(raw))):]
    elif edit == "cut-in-header":
        _, start, header = draw(st.sampled_from(spans))
        del raw[start + draw(st.integers(0, max(header - 1, 0))):]
    elif edit == "trail":
        raw += draw(st.binary(min_size=1, max_size=20))
    return type(p)._first, bytes(raw)


def buffer_kinds(data: bytes) -> list:
    """data as every kind of buffer parse() takes: bytes, bytearray, a memoryview of the
    middle of a larger buffer, a read-only one, and a strided one (parse copies that)."""
    padded = b"\xAA" * 7 + data + b"\x55" * 5
    doubled = bytes(b for pair in zip(data, b"\x00" * len(data), strict=True) for b in pair)
    return [data, bytearray(data), memoryview(padded)[7:7 + len(data)],
            memoryview(bytearray(data)).toreadonly(), memoryview(doubled)[::2]]


@settings(FAST, max_examples=250)
@given(mutated_packets(), st.sampled_from(["given", "ip"]))
def test_mutated_stacked_packets_parse_back_or_raise_packet_error(case, how):
    first, data = case
    first = "ip" if how == "ip" else first
    for buffer in buffer_kinds(data):
        try:
            p = parse(buffer, first)
        except PacketError:
            continue
        assert bytes(p) == data
        repr(p)
        p.fields()
        try:
            p.verify()
        except PacketError:
            pass
        assert parse(bytes(p.copy()), first) == p


@settings(FAST, max_examples=150)
@given(stacked_packets(), st.data())
def test_parsed_packets_rebuilt_after_field_changes(p, data):
    """The build path over parsed layers: change fields of any layer (options of other sizes
    included), rebuild, and the new bytes parse to the same fields."""
    q = parse(bytes(p), type(p)._first)
    layers = [layer for layer, _, _ in header_spans(q)]
    for _ in range(data.draw(st.integers(1, 4))):
        layer = data.draw(st.sampled_from(layers))
        name, value = data.draw(field_changes(type(layer)))
        setattr(layer, name, value)
    for layer in layers:
        if hasattr(layer, "chksum"):
            layer.chksum = None
        for computed in ("len", "plen", "ihl", "dataofs"):
            if computed in type(layer)._field_names:
                setattr(layer, computed, None)
    rebuilt = bytes(q)
    again = parse(rebuilt, type(q)._first, verify=True)
    assert bytes(again) == rebuilt
    for layer, parsed in zip(layers, (layer for layer, _, _ in header_spans(again)), strict=False):
        assert type(parsed) is type(layer)
        assert {
            k: v for k, v in layer.fields().items() if v is not None
        }.items() <= parsed.fields().items()


def field_changes(cls):
    """(field name, a value it accepts) for a layer class."""
    common = {"chksum": st.none() | u16} if "chksum" in cls._field_names else {}
    options = st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))
    per_class = {
        IPv4: {"ttl": u8, "tos": u8, "id": u16, "flags": st.sampled_from([0, 2, "DF"]),
               "options": options},
        IPv6: {"hlim": u8, "tc": u8, "fl": st.integers(0, 0xFFFFF)},
        UDP: {"sport": u16, "dport": u16},
        TCP: {"sport": u16, "seq": st.integers(0, 2**32 - 1), "window": u16, "flags": st.just("SA"),
              "options": options},
        ICMP: {"type": u8, "id": u16, "seq": u16},
        ICMPv6: {"type": u8, "code": u8, "seq": u16},
    }
    fields = {**common, **per_class[cls]}
    return st.sampled_from(sorted(fields)).flatmap(
        lambda name: st.tuples(st.just(name), fields[name])
    )


# --- SPP headers and records ----------------------------------------------------------------

spp_fields = st.fixed_dictionaries({
    "connection_control": u8, "datastream_type": u8, "source_connection": u16,
    "destination_connection": u16, "sequence": u16, "acknowledge": u16, "allocation": u16})


@settings(FAST, max_examples=200)
@given(spp_fields, st.binary(max_size=20), st.integers(0, 12))
def test_spp_headers_from_every_kind_of_buffer(fields, tail, cut):
    header = SPPHeader(**fields)
    record = header.pack() + tail
    short = record[:cut]
    for buffer in (record, bytearray(record), memoryview(b"\x99" * 3 + record)[3:]):
        assert SPPHeader.unpack(buffer) == header
    if cut < 12:
        for buffer in (short, memoryview(b"\x99" * 3 + short + b"\x99" * 20)[3:3 + cut]):
            with pytest.raises(ValueError):
                SPPHeader.unpack(buffer)
    with pytest.raises(BufferError):
        SPPHeader.unpack(memoryview(record + record)[::2])


@settings(FAST, max_examples=60)
@given(st.lists(st.tuples(spp_fields,
                          st.binary(max_size=40), st.integers(0, 11)), min_size=1, max_size=12))
def test_spp_records_cut_anywhere_are_handed_over_whole(records):
    """Records written by hand, some cut inside their header: every one comes back, as
    (header, data) or in a MalformedRecordError's batch, byte for byte."""
    raw, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours = csock.socket(fileno=ours.detach())
    with raw, ours:
        sent = []
        for fields, payload, cut in records:
            record = SPPHeader(**fields).pack() + payload
            record = record[:cut] if cut and len(record) > cut else record
            raw.send(record)
            sent.append(record)
        raw.shutdown(socket.SHUT_WR)
        seen = []
        while True:
            try:
                batch = ours.recv_records()
            except (csock.MalformedRecordError, csock.SequenceError) as error:
                batch = error.records
            if not batch:
                break
            seen += [
                (header.pack() if header is not None else b"") + bytes(data)
                for header, data in batch
            ]
        assert seen == sent


# --- frames ---------------------------------------------------------------------------------

@settings(FAST, max_examples=60)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=10), st.data())
def test_frames_with_a_corrupt_length_or_cut_short(messages, data):
    """A frame stream with one length prefix rewritten and maybe cut short: the frames before
    it come back exactly, every frame respects max_size, and the end is an error or the
    stream's end, never a crash or a frame made of bytes that were not sent."""
    wire = bytearray(b"".join(struct.pack("!I", len(m)) + m for m in messages))
    bad = data.draw(st.integers(0, len(messages) - 1))
    at = sum(4 + len(m) for m in messages[:bad])
    wire[at : at + 4] = struct.pack(
        "!I",
        data.draw(
            st.sampled_from([0, 1, 199, 200, 201, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)
        ),
    )
    del wire[data.draw(st.integers(at, len(wire))):]
    max_size = data.draw(st.sampled_from([0, 64, 200, 16 * 2**20]))
    a, b = csock.socketpair()
    with a, b:
        a.sendall(wire)
        a.shutdown(csock.SHUT_WR)
        stream = csock.FramedStream(b, max_size=max_size)
        got: list[bytes] = []
        try:
            while True:
                batch = stream.recv_many()
                if not batch:
                    break
                got += [bytes(m) for m in batch]
        except (csock.IncompleteReadError, csock.FrameTooLargeError):
            pass
        assert all(len(m) <= max_size for m in got)
        intact = [m for m in messages[:bad] if len(m) <= max_size]
        assert got[:len(intact)] == intact[:len(got)]
        assert sum(4 + len(m) for m in got) <= len(wire)


# --- socket addresses and send batches ------------------------------------------------------

host4 = st.binary(min_size=4, max_size=4).map(socket.inet_ntoa)
host6 = st.binary(min_size=16, max_size=16).map(lambda b: socket.inet_ntop(socket.AF_INET6, b))
ports = st.sampled_from([0, 1, 65535, 65536, -1, 2**64]) | st.integers(0, 65535)
wrong = st.sampled_from([None, 1.5, [], object(), b"\xff" * 3, -1])
unix_paths = st.binary(max_size=120) | st.text(max_size=110).filter(lambda t: "\0" not in t)


def path_kinds(path):
    """A unix path as str, bytes, bytearray, a memoryview at an offset, and a strided view."""
    if isinstance(path, str):
        return [path]
    return [path, bytearray(path), memoryview(b"\x01" + path)[1:], memoryview(path + path)[::2]]


@st.composite
def addresses(draw):
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6, socket.AF_UNIX]))
    if family == socket.AF_INET:
        parts = [draw(host4 | st.sampled_from(["", "<broadcast>"]) | wrong), draw(ports | wrong)]
        return family, tuple(parts[:draw(st.integers(0, 3))] if draw(st.booleans()) else parts)
    if family == socket.AF_INET6:
        parts = [draw(host6 | st.just("") | wrong), draw(ports | wrong),
                 draw(st.integers(0, 0xFFFFF) | st.sampled_from([0x100000, -1])),
                 draw(st.integers(0, 2**32 - 1))]
        return family, tuple(parts[:draw(st.integers(0, 5))])
    return family, draw(st.sampled_from(path_kinds(draw(unix_paths))) | wrong)


def expected_sockaddr(family, address):
    """The sockaddr bytes the kernel should get for a well-formed address (None otherwise)."""
    if family == socket.AF_UNIX:
        if isinstance(address, memoryview) and not address.c_contiguous:
            return None
        path = os.fsencode(address) if isinstance(address, str) else bytes(address)
        if len(path) > 108 or (len(path) == 108 and path[:1] != b"\0"):
            return None
        return struct.pack("=H", family) + path + (b"\0" if path and path[:1] != b"\0" else b"")
    if len(address) < 2:
        return None
    host, port = address[0], address[1]
    if not (isinstance(port, int) and 0 <= port <= 65535):
        return None
    if family == socket.AF_INET:
        if len(address) != 2 or not isinstance(host, str):
            return None
        packed = {"": b"\0" * 4, "<broadcast>": b"\xff" * 4}.get(host) or socket.inet_aton(host)
        return struct.pack("=H", family) + struct.pack("!H", port) + packed + b"\0" * 8
    if not (2 <= len(address) <= 4) or not isinstance(host, str):
        return None
    flow = address[2] if len(address) > 2 else 0
    scope = address[3] if len(address) > 3 else 0
    if not 0 <= flow <= 0xFFFFF:
        return None
    packed = socket.inet_pton(socket.AF_INET6, host or "::")
    return (
        struct.pack("=H", family)
        + struct.pack("!HI", port, flow)
        + packed
        + struct.pack("=I", scope)
    )


@settings(FAST, max_examples=300)
@given(addresses())
def test_addresses_become_the_right_sockaddr_or_a_clear_error(case):
    family, address = case
    expected = (
        expected_sockaddr(family, address)
        if isinstance(address, (tuple, str, bytes, bytearray, memoryview))
        else None
    )
    try:
        got = _fastio.parse_address(family, address)
    except (TypeError, ValueError, OverflowError, OSError, BufferError):
        assert expected is None, f"{address!r} refused"
        return
    assert got == expected


batch_items = st.one_of(
    st.binary(max_size=100),
    st.binary(max_size=100).map(bytearray),
    st.binary(min_size=1, max_size=100).flatmap(
        lambda b: st.integers(0, len(b)).map(lambda i: memoryview(b)[i:])),
    st.binary(min_size=2, max_size=100).map(lambda b: memoryview(b)[::2]),
    st.sampled_from(["text", 7, None, (b"pair", 5),
                     (b"pair", b"\0no-such-peer"), (b"x",), (b"x", None, 1)]),
)


@settings(FAST, max_examples=100)
@given(st.lists(batch_items, max_size=20))
def test_send_batches_of_any_items_send_all_or_nothing(items):
    """send_batch parses every item before sending: a batch with a bad item raises and sends
    nothing; a good one arrives byte for byte, in order (up to a kernel error, which stops it
    and is raised by the next call)."""
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    with a, b:
        b.setblocking(False)
        a.settimeout(10)                             # a stuck send fails instead of hanging
        try:
            sent = a.send_batch(items)
        except (TypeError, ValueError, BufferError, OSError):
            sent = 0
        got = []
        while True:
            try:
                got += [bytes(d.data) for d in b.recv_batch()]
            except BlockingIOError:
                break
        expected = [bytes(item[0] if isinstance(item, tuple) else item) for item in items[:sent]]
        assert got == expected
        if 0 < sent < len(items):
            with pytest.raises(OSError):            # the error that stopped it
                a.send_batch([b"next"])


# --- atheris --------------------------------------------------------------------------------

def available(target: str) -> bool:
    if target == "spp":
        return hasattr(csock, "SPPHeader")
    return True


@pytest.mark.parametrize("target", ["frames", "packet", "spp"])
def test_short_fuzz_run(target, tmp_path):
    """A short coverage-guided run of every decoder (tests/fuzz_driver.py, atheris): no crash, no
    undocumented exception. The documented long run is 10M inputs per target."""
    pytest.importorskip("atheris")
    if not available(target):
        pytest.skip(f"the {target} decoder is not part of this build")
    env = child_env()
    runs = 20_000
    proc = subprocess.run([sys.executable, str(FUZZ), target, f"-runs={runs}", "-seed=1",
                           f"-artifact_prefix={tmp_path}/"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert f"fuzz {target}: {runs} inputs" in proc.stdout, proc.stdout[-2000:]
