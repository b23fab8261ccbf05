"""csock.packet: building, parsing, checksums and errors, checked byte for byte against scapy
and dpkt, with hypothesis round trips and (as root) the kernel's own opinion."""
from __future__ import annotations

import copy
import pickle
import socket
import struct
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csock import packet as pk
from csock.packet import (
    ICMP,
    TCP,
    UDP,
    ICMPv6,
    IPv4,
    IPv6,
    PacketError,
    PayloadView,
    checksum,
    parse,
)

from .children import script_output
from .strategies import extension_chains, packets, payloads, u8, udps

scapy = pytest.importorskip("scapy.all")
dpkt = pytest.importorskip("dpkt")
S_IP, S_IPv6, S_UDP, S_TCP, S_ICMP = scapy.IP, scapy.IPv6, scapy.UDP, scapy.TCP, scapy.ICMP
S_ECHO6, raw = scapy.ICMPv6EchoRequest, scapy.raw

PAYLOAD = bytes(range(64))
# MSS 1460, NOP, WScale 7, SAckOK, EOL
TCP_OPTS_BYTES = bytes.fromhex("020405b40103030704020000")
TCP_OPTS_SCAPY = [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b"")]
ROUTER_ALERT = b"\x94\x04\x00\x00"


def ip_fields(p):
    return {k: getattr(p, k) for k in ("version", "ihl", "tos", "len", "id", "flags", "frag",
                                       "ttl", "proto", "chksum", "src", "dst", "options")}


# --- building, byte for byte against scapy and dpkt ---------------------------------------

BUILD_CASES = {
    "ipv4-udp": (
        lambda: IPv4(src="10.0.0.1", dst="10.0.0.2", id=7) / UDP(sport=1234, dport=9) / PAYLOAD,
        lambda: S_IP(src="10.0.0.1", dst="10.0.0.2", id=7) / S_UDP(sport=1234, dport=9) / PAYLOAD),
    "ipv4-tcp-options": (
        lambda: IPv4(src="192.168.1.2", dst="8.8.8.8", ttl=3, flags="DF") /
        TCP(sport=4000, dport=443, seq=0xDEADBEEF, ack=17, flags="SA", window=65535,
            options=TCP_OPTS_BYTES[:-1]) / b"hello",
        lambda: S_IP(src="192.168.1.2", dst="8.8.8.8", ttl=3, flags="DF") /
        S_TCP(sport=4000, dport=443, seq=0xDEADBEEF, ack=17, flags="SA", window=65535,
              options=TCP_OPTS_SCAPY) / b"hello"),
    "ipv4-icmp-echo": (
        lambda: IPv4(src="1.2.3.4", dst="5.6.7.8") / ICMP(id=0x1234, seq=5) / b"ping",
        lambda: S_IP(src="1.2.3.4", dst="5.6.7.8") / S_ICMP(id=0x1234, seq=5) / b"ping"),
    "ipv4-options-udp": (
        lambda: IPv4(src="10.1.1.1", dst="10.2.2.2", tos=0x10, options=ROUTER_ALERT) /
        UDP(sport=1, dport=2) / b"x",
        lambda: S_IP(src="10.1.1.1", dst="10.2.2.2", tos=0x10, options=ROUTER_ALERT) /
        S_UDP(sport=1, dport=2) / b"x"),
    "ipv4-odd-options-padded": (
        lambda: IPv4(src="10.1.1.1", dst="10.2.2.2", options=b"\x01\x01\x01") / UDP() / b"abc",
        lambda: S_IP(src="10.1.1.1", dst="10.2.2.2", options=b"\x01\x01\x01\x00") / S_UDP() /
        b"abc"),
    "ipv6-udp": (
        lambda: IPv6(src="fe80::1", dst="2001:db8::2", tc=3, fl=0x12345) /
        UDP(sport=5353, dport=5353) / PAYLOAD,
        lambda: S_IPv6(src="fe80::1", dst="2001:db8::2", tc=3, fl=0x12345) /
        S_UDP(sport=5353, dport=5353) / PAYLOAD),
    "ipv6-tcp": (
        lambda: IPv6(src="::1", dst="::1", hlim=9) / TCP(sport=1, dport=2, options=TCP_OPTS_BYTES) /
        b"abc",
        lambda: S_IPv6(src="::1", dst="::1", hlim=9) /
        S_TCP(sport=1, dport=2, options=TCP_OPTS_SCAPY) / b"abc"),
    "ipv6-icmpv6-echo": (
        lambda: IPv6(src="fe80::1", dst="ff02::1") / ICMPv6(id=77, seq=3) / b"odd",
        lambda: S_IPv6(src="fe80::1", dst="ff02::1") / S_ECHO6(id=77, seq=3, data=b"odd")),
    "ipv4-udp-empty": (lambda: IPv4(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=9, dport=9),
                       lambda: S_IP(src="127.0.0.1", dst="127.0.0.1") / S_UDP(sport=9, dport=9)),
}


@pytest.mark.parametrize("name", list(BUILD_CASES))
def test_build_matches_scapy(name):
    ours, theirs = BUILD_CASES[name]
    expected = raw(theirs())
    assert bytes(ours()) == expected
    assert len(ours()) == len(expected)


@pytest.mark.parametrize("name", list(BUILD_CASES))
def test_parse_scapy_bytes_every_field(name):
    _, theirs = BUILD_CASES[name]
    data = raw(theirs())
    s = theirs().__class__(data)
    p = parse(data, first="ip")
    assert bytes(p) == data
    p.verify()
    if isinstance(p, IPv4):
        for k in ("version", "ihl", "tos", "len", "id", "frag", "ttl",
                  "proto", "chksum", "src", "dst"):
            assert getattr(p, k) == getattr(s, k), k
        assert p.flags == int(s.flags)
        assert p.options == data[20:p.ihl * 4]
    else:
        for k in ("version", "tc", "fl", "plen", "nh", "hlim", "src", "dst"):
            assert getattr(p, k) == getattr(s, k), k
    upper, su = p.payload, s.payload
    if isinstance(upper, UDP):
        assert (upper.sport,
                upper.dport, upper.len, upper.chksum) == (su.sport, su.dport, su.len, su.chksum)
        assert upper.payload == bytes(su.payload)
    elif isinstance(upper, TCP):
        for k in ("sport", "dport", "seq", "ack", "dataofs",
                  "reserved", "window", "chksum", "urgptr"):
            assert getattr(upper, k) == getattr(su, k), k
        assert upper.flags == int(su.flags)
        assert upper.options == data[len(data) - len(upper.payload) - (upper.dataofs * 4 - 20):
                                      len(data) - len(upper.payload)]
        assert upper.payload == bytes(su.payload)
    elif isinstance(upper, ICMP):
        assert (upper.type, upper.code, upper.chksum, upper.id, upper.seq) == (
            su.type,
            su.code,
            su.chksum,
            su.id,
            su.seq,
        )
        assert upper.payload == bytes(su.payload)
    else:
        assert isinstance(upper, ICMPv6)
        assert (upper.type, upper.code, upper.chksum, upper.id, upper.seq) == (
            su.type,
            su.code,
            su.cksum,
            su.id,
            su.seq,
        )
        assert upper.payload == su.data


def test_build_and_parse_against_dpkt():
    u = dpkt.udp.UDP(sport=1000, dport=2000, data=PAYLOAD, ulen=8 + len(PAYLOAD))
    ip = dpkt.ip.IP(src=socket.inet_aton("1.2.3.4"), dst=socket.inet_aton("5.6.7.8"), p=17, id=0,
                    ttl=64, data=u, len=20 + 8 + len(PAYLOAD))
    theirs = bytes(ip)
    ours = IPv4(src="1.2.3.4", dst="5.6.7.8", id=0) / UDP(sport=1000, dport=2000) / PAYLOAD
    assert bytes(ours) == theirs
    p = parse(theirs)
    d = dpkt.ip.IP(theirs)
    assert (p.version, p.ihl, p.tos, p.len, p.id, p.ttl, p.proto, p.chksum) == (
        d.v, d.hl, d.tos, d.len, d.id, d.ttl, d.p, d.sum)
    assert (p.src, p.dst) == (socket.inet_ntoa(d.src), socket.inet_ntoa(d.dst))
    assert (p[UDP].sport, p[UDP].dport, p[UDP].len, p[UDP].chksum) == (
        d.data.sport,
        d.data.dport,
        d.data.ulen,
        d.data.sum,
    )
    t = dpkt.tcp.TCP(sport=5, dport=6, seq=99, ack=100, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH,
                     win=1000,
                     opts=TCP_OPTS_BYTES, data=b"tcp data")
    t.off = (20 + len(TCP_OPTS_BYTES)) // 4
    ip6 = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                       dst=socket.inet_pton(socket.AF_INET6, "2001:db8::2"), nxt=6, hlim=64, data=t)
    ip6.plen = len(bytes(t))
    theirs6 = bytes(ip6)
    p6 = parse(theirs6, "ipv6")
    assert bytes(p6) == theirs6
    assert (p6.src, p6.dst, p6.nh, p6.plen) == ("2001:db8::1", "2001:db8::2", 6, ip6.plen)
    tcp = p6[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags, tcp.window, tcp.options) == (
        5, 6, 99, 100, 0x18, 1000, TCP_OPTS_BYTES)
    assert tcp.payload == b"tcp data"
    ours6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=5, dport=6, seq=99, ack=100,
                                                             flags="PA",
                                                           window=1000,
                                                           options=TCP_OPTS_BYTES) / b"tcp data"
    assert bytes(ours6) == theirs6   # dpkt computes the TCP checksum with the pseudo-header too


def test_defaults_like_scapy():
    ip = IPv4()
    assert (ip.version, ip.ttl, ip.id, ip.ihl, ip.len, ip.chksum, ip.proto) == (
        4,
        64,
        1,
        None,
        None,
        None,
        None,
    )
    assert IPv6().hlim == 64 and IPv6().plen is None and IPv6().nh is None
    t = TCP()
    assert (t.flags, t.window, t.dataofs, t.sport, t.dport) == (0x02, 8192, None, 20, 80)
    assert (UDP().sport, UDP().dport) == (53, 53)
    assert (ICMP().type, ICMP().code) == (pk.ICMP_ECHO_REQUEST, 0) == (8, 0)
    assert ICMPv6().type == pk.ICMPV6_ECHO_REQUEST == 128
    assert bytes(TCP()) == raw(S_TCP())           # no IP layer: checksum left 0, as scapy
    assert bytes(UDP() / b"x") == raw(S_UDP() / b"x")
    assert bytes(IPv4(src="0.0.0.0") / b"ab") == raw(S_IP(src="0.0.0.0") / b"ab")   # proto 0
    assert bytes(IPv6(src="::1") / b"ab") == raw(S_IPv6(src="::1") / b"ab")          # nh 59


def test_protocol_numbers_filled_from_the_next_layer():
    assert parse(bytes(IPv4() / UDP())).proto == 17
    assert parse(bytes(IPv4() / TCP())).proto == 6
    assert parse(bytes(IPv4() / ICMP())).proto == 1
    assert parse(bytes(IPv6() / UDP()), "ipv6").nh == 17
    assert parse(bytes(IPv6() / ICMPv6()), "ipv6").nh == 58
    inner = parse(bytes(IPv4(src="1.1.1.1") / IPv4(src="2.2.2.2") / UDP(dport=7) / b"x"))
    assert inner.proto == 4 and inner.payload.src == "2.2.2.2" and inner[UDP].dport == 7
    assert parse(bytes(IPv4(proto=99) / UDP())).proto == 99     # a caller-set proto is kept


def test_checksum_helper_rfc1071():
    from scapy.utils import checksum as scapy_checksum
    assert checksum(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7") == 0x220D   # RFC 1071 section 3 example
    for data in (b"", b"\xff", b"\x12\x34\x56", bytes(range(255)),
                 b"\xff" * 1001, PAYLOAD * 7 + b"z"):
        assert checksum(data) == scapy_checksum(data)
        assert checksum(bytearray(data)) == checksum(memoryview(data)) == checksum(data)
    hdr = bytes(IPv4(src="10.0.0.1"))
    assert checksum(hdr) == 0


# --- checksum rules -----------------------------------------------------------------------

def udp_zero_checksum_packet(ip):
    """A packet whose computed UDP checksum is 0 (so it must go out as 0xFFFF)."""
    base = bytes(ip / UDP(sport=1, dport=2) / b"\0\0")
    c = struct.unpack_from("!H", base, len(base) - 4)[0]
    # the payload word c adds c to the sum, which makes the checksum ~(S + ~S) = 0
    return ip / UDP(sport=1, dport=2) / struct.pack("!H", c)


@pytest.mark.parametrize("ip", [lambda: IPv4(src="10.0.0.1", dst="10.0.0.9"),
                                lambda: IPv6(src="fe80::1", dst="fe80::9")])
def test_computed_udp_checksum_zero_is_sent_as_ffff(ip):
    p = udp_zero_checksum_packet(ip())
    data = bytes(p)
    assert data[-4:-2] == b"\xff\xff"
    scapy_cls = S_IP if isinstance(p, IPv4) else S_IPv6
    s = scapy_cls(src=p.src, dst=p.dst) / S_UDP(sport=1, dport=2) / bytes(p[UDP].payload)
    assert raw(s) == data
    parse(data, "ip", verify=True)


def test_udp_checksum_zero_means_none_on_ipv4_only():
    p4 = IPv4(src="1.1.1.1") / UDP(chksum=0) / b"data"
    parse(bytes(p4), verify=True)
    p6 = IPv6(src="::2") / UDP(chksum=0) / b"data"
    with pytest.raises(PacketError, match="UDP checksum 0x0000 does not match"):
        parse(bytes(p6), "ipv6", verify=True)


def test_caller_set_values_are_kept():
    p = IPv4(src="1.2.3.4", len=1000,
             chksum=0xBEEF, proto=200, ihl=7) / UDP(len=3, chksum=0x1234) / b"abc"
    data = bytes(p)
    assert (
        data[2:4] == b"\x03\xe8"
        and data[10:12] == b"\xbe\xef"
        and data[9] == 200
        and data[0] == 0x47
    )
    assert data[24:26] == b"\x00\x03" and data[26:28] == b"\x12\x34"
    t = bytes(IPv4() / TCP(dataofs=9, chksum=0xABCD))
    assert t[32] >> 4 == 9 and t[36:38] == b"\xab\xcd"


def test_bad_checksum_round_trips_unchanged():
    good = bytes(IPv4(src="9.9.9.9", dst="8.8.8.8") / UDP(sport=7, dport=8) / b"payload")
    bad = bytearray(good)
    bad[26:28] = b"\x12\x34"
    bad = bytes(bad)
    p = parse(bad)
    assert p[UDP].chksum == 0x1234
    assert bytes(p) == bad
    assert bytes(p.copy()) == bad               # a copy is a different object, same bytes
    p.ttl = 64                                  # same value, but now it is rebuilt
    assert bytes(p) == bad


@pytest.mark.parametrize("case,offset,layer", [
    ("ipv4-udp", 10, "IPv4"), ("ipv4-udp", 12, "IPv4"), ("ipv4-udp", 26, "UDP"),
    ("ipv4-udp", 40, "UDP"),
    ("ipv4-tcp-options", 20 + 16, "TCP"), ("ipv4-tcp-options", -1, "TCP"),
    ("ipv4-icmp-echo", 20 + 4, "ICMP"), ("ipv4-icmp-echo", -1, "ICMP"),
    ("ipv6-udp", 8, "UDP"), ("ipv6-udp", 40 + 6, "UDP"), ("ipv6-tcp", -2, "TCP"),
    ("ipv6-icmpv6-echo", 30, "ICMPv6"), ("ipv6-icmpv6-echo", -1, "ICMPv6"),
])
def test_verify_names_the_layer(case, offset, layer):
    ours, _ = BUILD_CASES[case]
    data = bytes(ours())
    parse(data, "ip").verify()
    parse(data, "ip", verify=True)
    broken = bytearray(data)
    broken[offset] ^= 0x40
    with pytest.raises(PacketError,
                       match=rf"^{layer} checksum 0x[0-9a-f]{{4}} does not match 0x[0-9a-f]{{4}}$"):
        parse(bytes(broken), "ip", verify=True)
    p = parse(bytes(broken), "ip")          # parsing alone does not check
    assert bytes(p) == bytes(broken)
    with pytest.raises(PacketError, match=layer):
        p.verify()


def test_verify_message_has_stored_and_computed_values():
    data = bytearray(bytes(IPv4(src="1.2.3.4") / UDP(sport=1, dport=2) / b"xyz"))
    good = struct.unpack_from("!H", data, 26)[0]
    data[26:28] = b"\x12\x34"
    with pytest.raises(PacketError) as e:
        parse(bytes(data), verify=True)
    assert str(e.value) == f"UDP checksum 0x1234 does not match 0x{good:04x}"
    assert isinstance(e.value, ValueError)


# --- parsing ------------------------------------------------------------------------------

def test_parse_bytes_returns_the_same_object_and_zero_copy_payload():
    data = bytes(IPv4(src="10.0.0.1") / UDP() / PAYLOAD)
    p = parse(data)
    assert bytes(p) is data
    view = p[UDP].payload
    assert view == PAYLOAD and len(view) == 64 and bytes(view) == PAYLOAD
    assert view.obj is data                     # refers to the input, no copy
    m = memoryview(view)
    assert m.readonly and m.tobytes() == PAYLOAD
    with pytest.raises(TypeError):
        m[0] = 1
    assert view[0] == 0 and view[-1] == 63 and bytes(view[2:4]) == b"\x02\x03"


def test_parse_bytearray_payload_is_a_view_of_it():
    ba = bytearray(bytes(IPv4(src="10.0.0.1") / UDP() / PAYLOAD))
    p = parse(ba)
    view = p[UDP].payload
    assert view == PAYLOAD
    ba[28] = 0xEE                               # the view sees the change: it is not a copy
    assert view[0] == 0xEE
    with pytest.raises(BufferError):
        ba.append(0)                            # exported: bytearray cannot resize
    assert bytes(p) == bytes(ba)
    del p, view
    parse(memoryview(bytes(ba)))                # memoryview input too


def test_releasing_what_payload_view_obj_returns_keeps_the_buffer():
    """PayloadView.obj of a parsed bytearray was the packet's own read-only memoryview, the
    only export the view and the layers held: releasing it let the bytearray be resized and
    freed under them (bytes(view) read freed memory). Each .obj is a view of its own now."""
    data = bytes(IPv4(src="10.0.0.1") / UDP() / (b"A" * 4000))
    ba = bytearray(data)
    p = parse(ba)
    view = p[UDP].payload
    obj = view.obj
    assert type(obj) is memoryview and obj.readonly and obj.obj is ba and obj == data
    obj.release()
    view.obj.release()
    with pytest.raises(BufferError):
        ba.clear()                              # still exported: not resized, not freed
    with pytest.raises(BufferError):
        ba.extend(b"x" * 100000)
    assert bytes(view) == b"A" * 4000 and bytes(p) == data
    assert view.obj == data and view.obj is not view.obj
    m = memoryview(ba)
    q = parse(m)                                # the caller's own memoryview, released
    m.release()
    with pytest.raises(BufferError):
        ba.clear()
    assert bytes(q[UDP].payload) == b"A" * 4000 and bytes(q) == data
    del p, view, q
    ba.clear()                                  # the packets gone: the exports are too


def test_parse_first_layer_choices():
    v4 = bytes(IPv4() / UDP() / b"a")
    v6 = bytes(IPv6() / UDP() / b"a")
    assert isinstance(parse(v4, "ip"), IPv4) and isinstance(parse(v6, "ip"), IPv6)
    assert isinstance(parse(v6, "ipv6"), IPv6)
    assert parse(v4[20:], "udp").payload == b"a"
    assert parse(bytes(TCP()), "tcp").flags == 2
    assert parse(bytes(ICMP()), "icmp").type == 8
    assert parse(bytes(ICMPv6()), "icmpv6").type == 128
    with pytest.raises(PacketError):
        parse(v6, "ipv4")
    with pytest.raises(PacketError):
        parse(b"\x55" + v4[1:], "ip")
    with pytest.raises(ValueError):
        parse(v4, "ethernet")
    with pytest.raises(TypeError):
        parse("not bytes")


def test_unknown_upper_protocol_is_raw_payload():
    p = parse(bytes(IPv4(proto=132) / b"sctp-ish"))
    assert p.proto == 132 and p.payload == b"sctp-ish" and not isinstance(p.payload, pk.Layer)
    data = bytes(IPv4(flags="MF") / UDP() / b"fragment")
    f = parse(data)                             # a fragment: not parsed further
    assert f.flags == 1 and f.payload == data[20:] and UDP not in f


def test_ipv6_extension_headers_are_skipped_and_kept():
    s = (S_IPv6(src="fe80::1", dst="fe80::2") / scapy.IPv6ExtHdrHopByHop()
         / scapy.IPv6ExtHdrDestOpt() / scapy.IPv6ExtHdrFragment(offset=0, m=0, id=5)
         / S_UDP(sport=1, dport=2) / b"hello")
    data = raw(s)
    p = parse(data, "ipv6", verify=True)
    assert p.nh == 0 and len(p.ext) == 24 and p.ext == data[40:64]
    assert p[UDP].dport == 2 and p[UDP].payload == b"hello"
    assert bytes(p) == data
    p.hlim = 1                                  # rebuilt from fields: still the same layout
    assert bytes(p)[64:] == data[64:] and bytes(p)[7] == 1
    # AH: next header UDP, length (24 / 4) - 2 = 4, reserved, SPI, sequence, 12-byte ICV
    ah = bytes([17, 4, 0, 0]) + struct.pack("!II", 0x100, 1) + b"\xaa" * 12
    ah_packet = bytes(IPv6(src="::1", dst="::2", nh=51, ext=ah) / (bytes(UDP(dport=99)) + b"x"))
    q = parse(ah_packet, "ipv6")
    assert isinstance(q.payload, UDP) and q.nh == 51 and q.ext == ah and q[UDP].dport == 99
    assert bytes(q) == ah_packet
    frag = raw(
        S_IPv6(src="::1", dst="::2") / scapy.IPv6ExtHdrFragment(offset=10, m=0, nh=17) / b"middle"
    )
    assert parse(frag, "ipv6").payload == b"middle"
    routed = raw(
        S_IPv6(src="::1", dst="::2")
        / scapy.IPv6ExtHdrRouting(addresses=["::3"], segleft=0)
        / S_UDP()
        / b"r"
    )
    assert parse(routed, "ipv6")[UDP].payload == b"r"
    built = IPv6(src="::1", nh=0, ext=data[40:64]) / UDP(sport=1, dport=2) / b"hello"
    assert bytes(built) == bytes(
        IPv6(src="::1", ext=data[40:64], nh=0, dst="::1") / UDP(sport=1, dport=2) / b"hello"
    )
    with pytest.raises(PacketError):
        bytes(IPv6(ext=data[40:48]) / UDP())    # nh cannot be guessed with extension headers


def test_ipv6_ah_not_a_multiple_of_8_bytes_is_refused():
    """An AH header is (len + 2) * 4 bytes, but in IPv6 it must fill whole 8-byte units (RFC
    4302 2.2), as every IPv6 extension header does (RFC 8200): a 12-byte one is malformed, a
    PacketError when parsed (it was accepted, and the packet then failed len() and bytes())."""
    udp = bytes(UDP(sport=1, dport=2) / b"hi")
    for ah in (bytes([17, 1, 0, 0]) + b"\0" * 8,                      # (1 + 2) * 4 = 12
               bytes([17, 3, 0, 0]) + b"\0" * 16):                    # (3 + 2) * 4 = 20
        data = bytes(IPv6(nh=51, plen=len(ah) + len(udp)))[:40] + ah + udp
        for verify in (False, True):
            with pytest.raises(PacketError, match=r"^IPv6 AH header of \d+ bytes is not a "
                                                  r"multiple of 8"):
                parse(data, "ipv6", verify=verify)
        hop = bytes([51, 0]) + b"\0" * 6                                 # behind a hop-by-hop
        inner = bytes(IPv6(nh=0, plen=8 + len(ah) + len(udp)))[:40] + hop + ah + udp
        with pytest.raises(PacketError, match="AH"):
            parse(inner, "ip")
    ah = bytes([17, 2, 0, 0]) + b"\0" * 12                            # (2 + 2) * 4 = 16: fine
    data = bytes(IPv6(nh=51, ext=ah) / UDP(sport=1, dport=2) / b"hi")
    p = parse(data, "ipv6", verify=True)
    assert p.ext == ah and len(p) == len(data) and bytes(p) == data
    p.hlim = 5
    assert bytes(p)[40:] == data[40:]


def test_trailing_bytes_are_kept():
    data = bytes(IPv4(src="1.1.1.1") / UDP() / b"abc") + b"\0" * 6     # Ethernet padding
    p = parse(data)
    assert p.len == 31 and p[UDP].payload == b"abc"
    assert bytes(p) == data
    p.ttl = 5
    assert bytes(p)[31:] == b"\0" * 6 and len(bytes(p)) == len(data)


TRUNCATED = {
    "ipv4 short": (bytes(IPv4() / UDP())[:19], "ipv4"),
    "ipv4 ihl<5": (b"\x44" + bytes(IPv4() / UDP())[1:], "ipv4"),
    "ipv4 ihl beyond data": (b"\x4f" + bytes(IPv4())[1:], "ipv4"),
    "ipv4 len beyond data": (bytes(IPv4(len=100) / UDP()), "ipv4"),
    "ipv4 len < header": (bytes(IPv4(len=10)), "ipv4"),
    "ipv4 bad version": (b"\x65" + bytes(IPv4())[1:], "ipv4"),
    "udp len < 8": (bytes(IPv4() / UDP(len=7) / b"abc"), "ipv4"),
    "udp len beyond data": (bytes(IPv4() / UDP(len=50) / b"abc"), "ipv4"),
    "udp short": (b"\x00\x01\x00", "udp"),
    "tcp dataofs < 5": (bytes(IPv4() / TCP(dataofs=4)), "ipv4"),
    "tcp dataofs beyond data": (bytes(IPv4() / TCP(dataofs=15) / b"short"), "ipv4"),
    "tcp short": (bytes(TCP())[:19], "tcp"),
    "icmp short": (bytes(ICMP())[:7], "icmp"),
    "icmpv6 short": (b"\x80", "icmpv6"),
    "ipv6 short": (bytes(IPv6())[:39], "ipv6"),
    "ipv6 bad version": (b"\x40" + bytes(IPv6())[1:], "ipv6"),
    "ipv6 payload beyond data": (bytes(IPv6(plen=30) / b"abc"), "ipv6"),
    "ipv6 ext chain truncated": (bytes(IPv6(nh=0, plen=4) / b"\x11\x00\x00\x00"), "ipv6"),
    "ipv6 ext length beyond payload": (bytes(IPv6(nh=60) / (b"\x11\x05" + b"\0" * 6)), "ipv6"),
    "ipv6 ext then truncated udp": (bytes(IPv6(nh=60) / (b"\x11\x00" + b"\0" * 6) / b"\0\1"),
                                    "ipv6"),
    "empty": (b"", "ip"),
}


@pytest.mark.parametrize("name", list(TRUNCATED))
def test_truncated_or_inconsistent_input_raises_packet_error(name):
    data, first = TRUNCATED[name]
    with pytest.raises(PacketError):
        parse(data, first)
    with pytest.raises(ValueError):             # PacketError is a ValueError
        parse(bytearray(data), first)


# --- field values -------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: UDP(sport=70000), lambda: UDP(dport=-1), lambda: IPv4(ttl=256),
    lambda: IPv4(src="999.1.1.1"),
    lambda: IPv4(dst="1.2.3"), lambda: IPv6(dst="1.2.3.4"), lambda: IPv6(src="::g"),
    lambda: IPv4(flags=8),
    lambda: IPv4(frag=0x2000), lambda: IPv6(fl=1 << 20), lambda: TCP(seq=1 << 32),
    lambda: TCP(flags=0x200),
    lambda: TCP(flags="SX"), lambda: ICMP(type=300), lambda: ICMPv6(code=-5),
    lambda: IPv4(options=b"x" * 41),
    lambda: TCP(options=b"x" * 44), lambda: IPv4(version=16), lambda: IPv4(src="1.2.3.4\0"),
    lambda: IPv6(ext=b"\0" * 7),
])
def test_out_of_range_raises_value_error(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("make", [
    lambda: UDP(sport="53"), lambda: UDP(dport=1.0), lambda: IPv4(ttl=None), lambda: IPv4(src=1234),
    lambda: TCP(seq=1.5), lambda: ICMP(id=b"1"), lambda: IPv4(options="opts"),
    lambda: UDP(sport=True),
])
def test_wrong_type_raises_type_error(make):
    with pytest.raises(TypeError):
        make()


def test_setters_validate_and_mark_dirty():
    data = bytes(IPv4(src="1.1.1.1") / UDP(sport=1) / b"abc")
    p = parse(data)
    with pytest.raises(ValueError):
        p[UDP].sport = 70000
    with pytest.raises(TypeError):
        p.ttl = "64"
    with pytest.raises(ValueError):
        p.src = "1.1.1.256"
    assert bytes(p) is data                     # failed assignments changed nothing
    p[UDP].sport = 2
    out = bytes(p)
    assert out is not data and out[20:22] == b"\x00\x02"
    assert out[26:28] == data[26:28]            # parsed checksum is kept (it was set)
    p[UDP].chksum = None                        # ask for a fresh one
    parse(bytes(p), verify=True)
    p.src = "2.2.2.2"
    assert p.src == "2.2.2.2" and bytes(p)[12:16] == bytes([2, 2, 2, 2])
    p.dst = socket.inet_aton("3.3.3.3")         # packed bytes are accepted too
    assert p.dst == "3.3.3.3"
    import ipaddress
    p.dst = ipaddress.ip_address("4.4.4.4")
    assert p.dst == "4.4.4.4"
    t = TCP()
    t.flags = "SA"
    assert t.flags == 0x12
    ip = IPv4()
    ip.flags = "DF"
    assert ip.flags == 2


# --- hypothesis ---------------------------------------------------------------------------

# (the strategies are in tests/strategies.py, shared with the fuzz tests)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets())
def test_round_trip_fields_and_bytes(p):
    data = bytes(p)
    q = parse(data, "ip")
    assert bytes(q) == data
    assert q == parse(data, "ip")
    assert type(q.payload) is type(p.payload)
    for layer_p, layer_q in ((p, q), (p.payload, q.payload)):
        for name, value in layer_p.fields().items():
            if value is not None:
                assert getattr(layer_q, name) == value, name
    assert q.payload.payload == p.payload.payload
    if all(getattr(layer, "chksum", None) is None for layer in (p, p.payload)):
        q.verify()                              # everything computed: checksums are right
    # rebuilt from the parsed fields (not the input object): the same bytes
    r = q.copy()
    if isinstance(r, IPv4):
        r.ttl = r.ttl
    else:
        r.hlim = r.hlim
    assert bytes(r) == data and bytes(r) is not data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["ipv4", "ipv6", "ip",
                        "udp", "tcp", "icmp", "icmpv6"]), st.binary(max_size=200))
def test_garbage_raises_only_packet_error(first, data):
    try:
        p = parse(data, first)
    except PacketError:
        return
    assert bytes(p) == data
    repr(p)
    try:
        p.verify()
    except PacketError:
        pass


@settings(max_examples=150, deadline=None)
@given(packets(), st.data())
def test_mutated_valid_packets_raise_only_packet_error(p, data):
    raw_bytes = bytearray(bytes(p))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw_bytes) - 1))
        raw_bytes[i] = data.draw(u8)
    cut = data.draw(st.integers(0, len(raw_bytes)))
    b = bytes(raw_bytes[:cut])
    try:
        q = parse(b, "ip")
    except PacketError:
        return
    assert bytes(q) == b


# --- the Python surface -------------------------------------------------------------------

def test_stacking_lookup_and_contains():
    p = IPv4(dst="127.0.0.1") / UDP(dport=9) / b"payload"
    assert p[UDP].dport == 9 and p[IPv4] is p
    assert UDP in p and IPv4 in p and TCP not in p
    with pytest.raises(IndexError, match=r"Layer \[TCP\] not found"):
        p[TCP]
    assert p.getlayer(TCP) is None and p.haslayer(UDP)
    assert p.layers() == [IPv4, UDP]
    assert p.payload.payload == b"payload"
    more = p / b"-more"
    assert more[UDP].payload == b"payload-more" and p[UDP].payload == b"payload"
    with pytest.raises(TypeError):
        p / UDP()                               # a layer after raw bytes
    with pytest.raises(TypeError):
        p / 5


def test_stacking_does_not_change_operands_held_elsewhere():
    ip = IPv4(dst="10.0.0.1")
    udp = UDP(dport=1)
    a = ip / udp
    b = ip / TCP()
    assert isinstance(ip.payload, bytes) and ip.payload == b""
    assert isinstance(a.payload, UDP) and isinstance(b.payload, TCP)
    a.payload.dport = 2
    assert udp.dport == 1
    base = IPv4() / UDP()
    c1 = base / b"one"
    c2 = base / b"two"
    assert c1[UDP].payload == b"one" and c2[UDP].payload == b"two" and base[UDP].payload == b""


def test_payload_assignment():
    p = IPv4()
    p.payload = UDP(dport=4) / b"x"
    assert bytes(p)[20:] == bytes(IPv4() / UDP(dport=4) / b"x")[20:]
    with pytest.raises(ValueError):
        p.payload = p
    with pytest.raises(TypeError):
        p.payload = "text"
    p.payload = None
    assert bytes(p) == bytes(IPv4())


def test_repr_equality_copy_pickle():
    p = IPv4(src="1.2.3.4", dst="5.6.7.8") / UDP(sport=1, dport=2) / b"hi"
    r = repr(p)
    assert (
        r.startswith("IPv4(version=4, tos=0, id=1")
        and "src='1.2.3.4'" in r
        and "dst='5.6.7.8'" in r
    )
    assert r.endswith(" / UDP(sport=1, dport=2) / b'hi'")
    q = IPv4(src="1.2.3.4", dst="5.6.7.8") / UDP(sport=1, dport=2) / b"hi"
    assert p == q and not (p != q)
    assert p != IPv4(src="1.2.3.4", dst="5.6.7.8") / UDP(sport=1, dport=3) / b"hi"
    assert p != IPv4(src="1.2.3.4", dst="5.6.7.8") / UDP(sport=1, dport=2) / b"ho"
    assert p != IPv6()
    c = p.copy()
    assert c == p and c is not p and c.payload is not p.payload
    c[UDP].dport = 7
    assert p[UDP].dport == 2
    assert copy.deepcopy(p) == p and copy.copy(p) == p
    parsed = parse(bytes(p))
    assert parsed == parse(bytes(p)) and parsed != p    # parsed has len/chksum set
    assert pickle.loads(pickle.dumps(parsed)) == parsed
    assert "len=30" in repr(parsed)
    with pytest.raises(TypeError):
        hash(p)


def test_payload_view_pickles_as_bytes():
    """A view into the parsed buffer cannot cross processes: it pickles as a bytes copy, also
    one made by __new__ that points at nothing (the fault test calls its helpers directly)."""
    view = parse(bytes(IPv4() / UDP() / b"data"))[UDP].payload
    assert isinstance(view, PayloadView) and view == b"data"
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        copy_ = pickle.loads(pickle.dumps(view, protocol))
        assert type(copy_) is bytes and copy_ == b"data"
        assert pickle.loads(pickle.dumps(PayloadView.__new__(PayloadView), protocol)) == b""


def test_len_and_large_packets():
    p = IPv4() / UDP() / (b"x" * 1000)
    assert len(p) == 1028
    with pytest.raises(PacketError):
        bytes(IPv4() / UDP() / (b"x" * 70000))
    big6 = bytes(IPv6() / (b"y" * 65535))
    assert parse(big6, "ipv6").plen == 65535


def test_module_surface():
    for name in pk.__all__:
        assert hasattr(pk, name), name
    assert issubclass(PacketError, ValueError)
    assert pk.ICMP_ECHO_REPLY == 0 and pk.ICMPV6_ECHO_REPLY == 129
    assert pk.__doc__


# --- the kernel's opinion (root) ----------------------------------------------------------

def _can_raw() -> str | None:
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        return "raw sockets need CAP_NET_RAW (root)"
    except OSError as e:
        return f"raw sockets unavailable: {e}"
    s.close()
    return None


needs_raw = pytest.mark.skipif(_can_raw() is not None, reason=str(_can_raw()))


def _send_raw_and_receive(build_udp):
    """Send an IPv4/UDP packet through a stdlib raw socket (IPPROTO_RAW implies IP_HDRINCL)
    to a stdlib UDP socket on 127.0.0.1; the datagram received, or None after 0.3 s."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.3)
        port = rx.getsockname()[1]
        # With IP_HDRINCL Linux fills in the IPv4 id when it is 0 and always computes the IPv4
        # header checksum; tot_len and frag_off are taken in network byte order (as written
        # by bytes(): the BSD "host order" quirk does not apply on Linux).
        data = bytes(IPv4(src="127.0.0.1", dst="127.0.0.1", id=0) / build_udp(port))
        tx.sendto(data, ("127.0.0.1", 0))
        try:
            return rx.recvfrom(2048)
        except TimeoutError:
            return None
    finally:
        rx.close()
        tx.close()


@needs_raw
def test_kernel_accepts_our_udp_checksum():
    got = _send_raw_and_receive(lambda port: UDP(sport=40000, dport=port) / b"csock raw payload")
    assert got is not None, "the kernel dropped a packet with a correct UDP checksum"
    assert got[0] == b"csock raw payload" and got[1] == ("127.0.0.1", 40000)


@needs_raw
def test_kernel_drops_a_wrong_udp_checksum():
    def bad(port):
        good = UDP(sport=40000, dport=port) / b"csock raw payload"
        right = parse(bytes(IPv4(src="127.0.0.1", dst="127.0.0.1", id=0) / good))[UDP].chksum
        return UDP(sport=40000, dport=port, chksum=right ^ 0x0101) / b"csock raw payload"
    assert _send_raw_and_receive(bad) is None


LAYER_CLASSES = (IPv4, IPv6, UDP, TCP, ICMP, ICMPv6)


@pytest.mark.parametrize("cls", LAYER_CLASSES)
def test_fields_are_member_slots_the_interpreter_reads_directly(cls):
    # member descriptors + the generic getattr: CPython specialises `p.field` to a direct
    # load (LOAD_ATTR_SLOT); a property or a custom __getattribute__ would not be
    for name in (*cls._field_names, "payload"):
        assert type(getattr(cls, name)).__name__ == "member_descriptor", name
    assert cls.__getattribute__ is object.__getattribute__


@pytest.mark.parametrize("cls", LAYER_CLASSES)
def test_fields_cannot_be_deleted_or_stored_around_validation(cls):
    layer = cls()
    before = bytes(layer)
    for name in (*cls._field_names, "payload"):
        with pytest.raises(AttributeError, match="cannot be deleted"):
            delattr(layer, name)
        # the generic store is refused: by object.__setattr__'s own check (TypeError, up to
        # 3.12) or by the read-only field descriptor it reaches (AttributeError, 3.13)
        with pytest.raises((TypeError, AttributeError)):
            object.__setattr__(layer, name, "junk")
    with pytest.raises(AttributeError):
        layer.not_a_field = 1
    assert bytes(layer) == before


# Values no field accepts: wrong types, out of range for every field, oversize option bytes.
BAD_FIELD_VALUES = ["junk", -1, 2**70, 1.5, True, None, b"\x01" * 1000, [0] * 1000, object()]
# The longest header each layer can have (IPv6: 40 bytes + extension headers of at most 2 KiB
# in these tests), so a build that grew from a bad value shows.
MAX_HEADER = {IPv4: 60, IPv6: 40 + 2048, UDP: 8, TCP: 60, ICMP: 8, ICMPv6: 8}


def _stacked(cls):
    """cls as the top layer of a small packet, built once (and one parsed from bytes)."""
    under = {IPv4: UDP(), IPv6: UDP(), UDP: b"payload", TCP: b"payload",
             ICMP: b"echo", ICMPv6: b"echo"}
    built = cls() / under[cls]
    return [built, parse(bytes(built), cls._first)]


def _descriptor(layer, name):
    return next(k.__dict__[name] for k in type(layer).__mro__ if name in k.__dict__)


def _uses_survive(layer, limit):
    """Every use of a layer: each may raise TypeError/ValueError (PacketError is a ValueError),
    none may crash or build a header beyond limit bytes."""
    for use in (bytes, len, repr, lambda p: p.verify(), lambda p: p.fields(), lambda p: p.copy(),
                lambda p: p == p.copy(), lambda p: p / b"more", pickle.dumps):
        try:
            result = use(layer)
        except (TypeError, ValueError):
            continue
        if isinstance(result, bytes) and use is bytes:
            assert len(result) <= limit + 64, f"{len(result)}-byte packet from a bad field"


@pytest.mark.parametrize("cls", LAYER_CLASSES)
def test_field_descriptors_refuse_stores_and_deletes_that_skip_validation(cls):
    """type(p).__dict__["options"].__set__(p, [0] * 1000) used to store anything: bytes(p)
    then built a 1029-byte packet and verify() overflowed a stack buffer; __delete__ left a
    NULL slot that bytes(p) dereferenced."""
    for layer in _stacked(cls):
        before = bytes(layer)
        for name in (*cls._field_names, "payload"):
            descriptor = _descriptor(layer, name)
            for bad in BAD_FIELD_VALUES:
                try:
                    descriptor.__set__(layer, bad)
                except AttributeError:
                    pass
                _uses_survive(layer, MAX_HEADER[cls])
            with pytest.raises(AttributeError):
                descriptor.__delete__(layer)
            _uses_survive(layer, MAX_HEADER[cls])
        assert bytes(layer) == before           # nothing was stored


@pytest.mark.parametrize("cls", LAYER_CLASSES)
def test_c_code_checks_every_field_slot_where_it_reads_it(cls, monkeypatch):
    """With a layer's rule table loosened at run time (the one way left for a value that
    __setattr__ would refuse to reach a slot), the C code that reads the slot still refuses
    it: a wrong type or an out-of-range value raises, an oversize option never builds."""
    # (src and dst are not read from their slots: bytes() builds them from the packed address
    # set_special keeps beside the str)
    for name in (n for n in cls._field_names if n not in ("src", "dst")):
        label = f"{cls.__name__}.{name}"
        monkeypatch.setitem(cls._rules, name, (label, 2**62, True))     # any int, or None
        for bad in (2**40, 2**20, 70000, 256, 16, None):
            for layer in _stacked(cls):
                setattr(layer, name, bad)
                _uses_survive(layer, MAX_HEADER[cls])
                if bad is not None and bad > 0xFFFFFFFF:       # beyond every field
                    with pytest.raises((TypeError, ValueError), match=label):
                        bytes(layer)
        monkeypatch.undo()
    for name in ("options", "ext"):
        if name in cls._field_names:               # an int where C expects option bytes
            monkeypatch.setitem(cls._rules, name, (f"{cls.__name__}.{name}", 2**62, True))
            for layer in _stacked(cls):
                setattr(layer, name, 1000)
                with pytest.raises(TypeError):
                    bytes(layer)
                _uses_survive(layer, MAX_HEADER[cls])
            monkeypatch.undo()


def test_field_stores_by_any_name_object_are_validated():
    p = IPv4()
    name = "".join(["t", "tl"])                  # not the interned "ttl"
    setattr(p, name, 9)
    assert p.ttl == 9 and bytes(p)[8] == 9
    with pytest.raises(ValueError):
        setattr(p, name, 256)
    assert p.ttl == 9
    p.proto = socket.IPPROTO_UDP                 # an IntEnum is stored as the plain int
    assert type(p.proto) is int and p.proto == 17
    p.payload = None
    assert p.payload == b"" and bytes(p) == bytes(IPv4(ttl=9, proto=17))


def test_parsed_fields_are_plain_ints_and_strs():
    p = parse(
        bytes(IPv4(src="10.9.8.7", dst="10.1.1.1", id=0xBEEF) / UDP(sport=40000, dport=5353) / b"x")
    )
    values = [getattr(p, k) for k in IPv4._field_names]
    assert [type(v) for v in values] == [int] * 10 + [str, str, bytes]
    assert (p.id, p.src, p.dst, p[UDP].sport, p[UDP].dport) == (0xBEEF,
                                                                "10.9.8.7", "10.1.1.1", 40000, 5353)
    q = parse(
        bytes(IPv4(src="10.9.8.7", dst="10.1.1.1", id=0xBEEF) / UDP(sport=40000, dport=5353) / b"x")
    )
    assert q.src == p.src and q[UDP].sport == 40000     # shared objects (caches) keep values apart
    r = parse(bytes(IPv4(src="10.9.8.8", dst="10.1.1.1") / UDP(sport=40001, dport=5353)))
    assert (r.src, r[UDP].sport, p.src, p[UDP].sport) == ("10.9.8.8", 40001, "10.9.8.7", 40000)


def test_address_strings_are_right_for_many_addresses():
    # parsed addresses come from a small cache: every collision must still give the right text
    for i in range(2000):
        v4 = socket.inet_ntoa(struct.pack("!I", (i * 2654435761) & 0xFFFFFFFF))
        v6 = socket.inet_ntop(socket.AF_INET6,
                              struct.pack("!QQ", 0x20010DB8 << 32,
                                          i * 0x9E3779B97F4A7C15 & (2**64 - 1)))
        p = parse(bytes(IPv4(src=v4, dst="10.0.0.1")))
        q = parse(bytes(IPv6(src=v6, dst="::1")), "ipv6")
        assert (p.src, q.src) == (v4, v6)


def test_uninitialised_layers_do_not_crash():
    for cls in (IPv4, IPv6, UDP, TCP, ICMP, ICMPv6):
        layer = cls.__new__(cls)
        assert isinstance(bytes(layer), bytes)
        repr(layer)
    assert bytes(pk.Layer()) == b""
    with pytest.raises(NotImplementedError):
        pk.Layer().copy()


@pytest.mark.parametrize("segleft", [0, 1])
def test_ipv6_routing_header_final_destination_in_pseudo_header(segleft):
    s = (S_IPv6(src="2001:db8::1", dst="2001:db8::2")
         / scapy.IPv6ExtHdrRouting(addresses=["2001:db8::3", "2001:db8::9"], segleft=segleft)
         / S_UDP(sport=1, dport=2) / b"routed")
    data = raw(s)
    p = parse(data, "ipv6", verify=True)
    assert p[UDP].chksum == S_IPv6(data)[S_UDP].chksum
    ours = IPv6(src="2001:db8::1",
                dst="2001:db8::2", nh=43, ext=p.ext) / UDP(sport=1, dport=2) / b"routed"
    assert bytes(ours) == data


def test_deep_stacks_are_refused_not_crashing():
    p = IPv4()
    for _ in range(300):
        p = p / IPv4()
    with pytest.raises(PacketError, match="layers"):
        bytes(p)
    nested = bytes(IPv4() / IPv4() / IPv4() / UDP() / b"x")
    assert parse(nested)[UDP].payload == b"x"
    deep = b"".join(bytes(IPv4(len=20 * (12 - i) + 9, proto=4)) for i in range(12))
    q = parse(deep + b"\0" * 9)                 # IP-in-IP nesting: parsed 8 deep, then raw
    assert bytes(q) == deep + b"\0" * 9


def test_a_temporary_whose_inner_layer_is_held_elsewhere_is_copied():
    held = []

    def make():
        ip = IPv4()
        udp = UDP(dport=5)
        ip.payload = udp
        held.append(udp)
        return ip

    p = make() / b"more"                        # the IPv4 is a temporary, its UDP is not
    assert p[UDP].payload == b"more"
    assert held[0].payload == b"" and p[UDP] is not held[0]
    q = make() / UDP()                          # a layer after an empty payload
    assert isinstance(q[UDP].payload, UDP) and held[1].payload == b""


# A final payload whose __buffer__ (Python 3.12+) restacks the packet being built, once, at
# its Nth export: bytes() measured the chain, exporting the payload, then built into a bytes
# object of that size from the chain as it then was, here a 60 KB one (a heap overflow that
# killed the process); verify() and len() read the changed chain the same way.
RESTACKED_WHILE_BUILT = textwrap.dedent("""
    from csock.packet import IPv4, TCP, UDP, PacketError

    big = TCP() / (b"Z" * 60000)
    bytes(big)                                  # measured: 60,020 bytes

    class Restack:
        at = 0

        def __init__(self, action):
            self.action = action

        def __buffer__(self, flags):
            self.at -= 1
            if self.at == 0:
                self.action()
            return memoryview(b"data")

    def packet(action, at=1):
        ip, udp = IPv4(src="1.2.3.4"), UDP()
        ip.payload = udp
        udp.payload = restack = Restack(lambda: action(ip, udp))   # (stored: exported once)
        restack.at = at
        return ip

    def to_big(ip, udp):
        ip.payload = big

    def attempt(name, call):
        try:
            print(name, call())
        except PacketError as error:
            print(name, "PacketError:", error)

    ip = packet(to_big)
    built = bytes(ip)
    print("bytes", len(built), built == bytes(ip) == bytes(IPv4(src="1.2.3.4") / big))
    for at in (1, 2, 3):
        ip = packet(to_big, at)
        attempt(f"verify at {at}", ip.verify)
    ip = packet(to_big)
    print("len", len(ip), len(bytes(ip)))
    ip = packet(lambda ip, udp: setattr(udp, "payload", bytearray(50000)))
    attempt("another buffer", lambda: bytes(ip))
    ip = packet(lambda ip, udp: len(bytes(ip)))  # a build inside the export: no restack
    print("nested", len(bytes(ip)))
    junk = [bytearray(64) for _ in range(100000)]    # the heap is still sound
    print("done")
""")


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="a Python class exports a buffer (__buffer__) from Python 3.12 on")
def test_a_payload_restacking_the_packet_while_it_is_built(tmp_path):
    """The final payload is exported once, first, and the chain measured, built and checked
    with no Python code in between: from one state, the one the export left."""
    assert script_output(tmp_path, RESTACKED_WHILE_BUILT) == [
        "bytes 60040 True",
        "verify at 1 None", "verify at 2 None", "verify at 3 None",
        "len 60040 60040",
        "another buffer PacketError: the payload changed while the packet was built",
        "nested 32",
        "done",
    ]


@settings(max_examples=200, deadline=None)
@given(extension_chains(), udps, payloads)
def test_ipv6_extension_chains_round_trip(chain, udp, payload):
    nh, ext = chain
    p = IPv6(src="2001:db8::1", dst="2001:db8::2", nh=nh, ext=ext) / udp / payload
    data = bytes(p)
    q = parse(data, "ipv6")
    assert bytes(q) == data and q.ext == ext and q.nh == nh
    assert q[UDP].sport == udp.sport and q[UDP].payload == payload
    if udp.chksum is None:
        q.verify()
    for cut in (39, 40 + len(ext) // 2, 40 + len(ext) + 7):
        if cut < len(data):
            with pytest.raises(PacketError):
                parse(data[:cut], "ipv6")


def test_ipv6_addresses_read_back_canonical():
    p = IPv6(src="2001:0db8:0:0::0001", dst="0:0::1")
    assert (p.src, p.dst) == ("2001:db8::1", "::1")
    assert p == IPv6(src="2001:db8::1", dst="::1")
    p.src = "FE80::1"
    assert p.src == "fe80::1"


def test_options_from_any_buffer():
    opts = parse(bytes(IPv4() / TCP(options=TCP_OPTS_BYTES) / b"abcd"))[TCP].payload
    t = TCP(options=opts)                      # a PayloadView is a buffer too
    assert t.options == b"abcd" and type(t.options) is bytes
    assert IPv4(options=bytearray(ROUTER_ALERT)).options == ROUTER_ALERT
    assert IPv4(options=memoryview(ROUTER_ALERT)).options == ROUTER_ALERT
    with pytest.raises(TypeError):
        TCP(options=[1, 2, 3, 4])


def test_ipv6_segment_routing_header_final_segment_in_pseudo_header():
    srh = scapy.IPv6ExtHdrSegmentRouting(addresses=["2001:db8::9", "2001:db8::3"], segleft=1)
    s = S_IPv6(src="2001:db8::1", dst="2001:db8::3") / srh / S_UDP(sport=1, dport=2) / b"srv6"
    data = raw(s)
    p = parse(data, "ipv6", verify=True)
    assert p.nh == 43 and p[UDP].payload == b"srv6"
    ours = IPv6(src="2001:db8::1",
                dst="2001:db8::3", nh=43, ext=p.ext) / UDP(sport=1, dport=2) / b"srv6"
    assert bytes(ours) == data


def test_reused_layer_memory_starts_clean():
    # freed layers and payload views are kept per type for reuse (instancecache.h): a new
    # object built in reused memory must not see anything of the old one
    held = [parse(bytes(IPv4(src=f"10.0.0.{i % 250}", id=i, ttl=7) / UDP(sport=i, dport=9)
                        / (b"old" * 3)))
            for i in range(600)]
    del held
    fresh = [UDP() for _ in range(300)] + [IPv4() for _ in range(300)]
    assert all(u.payload == b"" and (u.sport, u.dport, u.len, u.chksum) == (53, 53, None, None)
               for u in fresh[:300])
    assert all((ip.ttl, ip.id, ip.src, ip.payload) == (64, 1, "0.0.0.0", b"") for ip in fresh[300:])
    p = parse(bytes(IPv4(src="1.2.3.4") / ICMP(id=5) / b"new"))
    assert type(p) is IPv4 and type(p.payload) is ICMP and p.payload.payload == b"new"


@pytest.mark.parametrize("cls, proto", [(UDP, 17), (TCP, 6), (ICMP, 1)])
def test_a_transport_layer_made_without_init_names_its_protocol(cls, proto):
    """IPv4() / cls.__new__(cls) carries cls's protocol number (it went out as 0, HOPOPT)."""
    assert bytes(IPv4(dst="10.0.0.1") / cls.__new__(cls))[9] == proto
    assert parse(bytes(IPv6(dst="::1") / cls.__new__(cls) / b"x"), "ipv6").nh == proto


@pytest.mark.parametrize("ip_class", [IPv4, IPv6])
def test_an_ip_layer_made_without_init_is_still_an_ip_layer(ip_class):
    """A UDP checksum under ip_class.__new__(ip_class) covers the pseudo-header, as under
    ip_class() (it was left 0, and verify() checked nothing)."""
    ip = ip_class.__new__(ip_class)
    ip.version = 4 if ip_class is IPv4 else 6
    ip.payload = UDP(sport=1, dport=2) / b"data"
    udp = parse(bytes(ip), "ipv4" if ip_class is IPv4 else "ipv6", verify=True).payload
    assert udp.chksum != 0 and udp.payload == b"data"


def test_an_icmp_layer_made_without_init_is_still_an_icmp_layer():
    """ICMP.__new__(ICMP) is an ICMP (it was checked, and named in errors, as ICMPv6)."""
    layer = ICMP.__new__(ICMP)
    layer.verify()                             # zeros, and the checksum they have
    layer.chksum = 0x1234
    with pytest.raises(PacketError, match=r"^ICMP checksum"):
        layer.verify()


class _BytesClaimingSixteen(bytes):
    def __len__(self) -> int:
        return 16


class _BytearrayClaimingSixteen(bytearray):
    def __len__(self) -> int:
        return 16


@pytest.mark.parametrize("kind", [_BytesClaimingSixteen, _BytearrayClaimingSixteen])
def test_a_packed_address_is_measured_by_its_buffer_not_its_len(kind: type) -> None:
    """A bytes or bytearray subclass whose __len__ lies: the address was copied for the
    field's size from a 1-byte buffer (heap bytes in the packet), and a bytes subclass was
    read as a bytearray. Its real length counts, and a true one is taken as its type's."""
    for layer, size in ((IPv6, 16), (IPv4, 4)):
        with pytest.raises(ValueError, match=f"{size} packed bytes, got 1"):
            layer(src=kind(b"a"))
    assert IPv4(dst=kind(bytes([5, 6, 7, 8]))).dst == "5.6.7.8"
    assert IPv6(dst=kind(bytes(15) + b"\x01")).dst == "::1"
