"""RawSocket (API §6) with csock.packet on real raw sockets, and python -m csock ping.

Raw sockets need CAP_NET_RAW: without it these tests skip (the PermissionError path is tested
by dropping the capability in a subprocess)."""
from __future__ import annotations

import os
import shutil
import socket as stdlib_socket
import subprocess
import sys
import textwrap

import pytest

import csock
from csock.packet import UDP, IPv4, IPv6, PacketError

from .netns import in_netns, veth_pair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.timeout(60)


def can_open_raw() -> bool:
    try:
        stdlib_socket.socket(stdlib_socket.AF_INET,
                             stdlib_socket.SOCK_RAW, stdlib_socket.IPPROTO_RAW).close()
    except PermissionError:
        return False
    return True


needs_raw = pytest.mark.skipif(not can_open_raw(), reason="raw sockets need CAP_NET_RAW (root)")


@pytest.fixture
def udp_sink():
    """A normal UDP socket on 127.0.0.1 with a short timeout."""
    with stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        yield s


def run_python(code: str, *argv: str,
               prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([*(prefix or []), sys.executable, "-c", textwrap.dedent(code), *argv],
                          capture_output=True, text=True, timeout=60, env=env)


def ping(*args: str, prefix: list[str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([*(prefix or []), sys.executable, "-m", "csock", "ping", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


# --- construction ---------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_without_cap_net_raw_construction_says_what_is_needed():
    drop = ["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"]
    proc = run_python("""
        import csock
        try:
            csock.RawSocket(csock.AF_INET, csock.IPPROTO_ICMP)
        except PermissionError as e:
            print("PermissionError:", e)
        try:
            csock.socket(csock.AF_INET, csock.SOCK_RAW, csock.IPPROTO_RAW)
        except PermissionError as e:
            print("PermissionError:", e)
    """, prefix=drop)
    if "Operation not permitted" in proc.stderr and "setpriv" in proc.stderr:
        pytest.skip(f"cannot drop capabilities here: {proc.stderr.strip()}")
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(
        "PermissionError" in line and "CAP_NET_RAW" in line for line in lines
    ), proc
    result = ping("-c", "1", "127.0.0.1", prefix=drop)
    assert result.returncode == 2 and "CAP_NET_RAW" in result.stderr


@needs_raw
def test_construction_forms():
    with csock.RawSocket() as s:
        assert type(s) is csock.RawSocket
        assert (s.family, s.type, s.proto) == (csock.AF_INET, csock.SOCK_RAW, csock.IPPROTO_RAW)
        assert s.header_included
        with s.dup() as d:
            assert type(d) is csock.RawSocket and d.proto == csock.IPPROTO_RAW
    with csock.socket(csock.AF_INET, csock.SOCK_RAW, csock.IPPROTO_ICMP) as s:
        assert type(s) is csock.RawSocket and not s.header_included
    with csock.RawSocket(csock.AF_INET, csock.IPPROTO_UDP, header_included=True) as s:
        assert s.header_included and s.getsockopt(csock.IPPROTO_IP, csock.IP_HDRINCL) == 1
    with csock.RawSocket(csock.AF_INET6, csock.IPPROTO_ICMPV6) as s:
        assert s.family == csock.AF_INET6 and not s.header_included
    with pytest.raises(ValueError):
        csock.RawSocket(csock.AF_UNIX)


# --- sending and receiving -------------------------------------------------------------------

@needs_raw
def test_send_packet_with_header_reaches_a_udp_socket(udp_sink):
    port = udp_sink.getsockname()[1]
    with csock.RawSocket() as raw:
        packet = (
            IPv4(src="127.0.0.1", dst="127.0.0.1")
            / UDP(sport=40000, dport=port)
            / b"built by csock"
        )
        assert raw.send_packet(packet) == 20 + 8 + 14
        data, sender = udp_sink.recvfrom(100)
        assert data == b"built by csock" and sender == ("127.0.0.1", 40000)
        raw.send_packet(
            bytes(
                IPv4(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=40001, dport=port) / b"bytes too"
            )
        )
        assert udp_sink.recvfrom(100) == (b"bytes too", ("127.0.0.1", 40001))


@needs_raw
def test_kernel_drops_a_bad_udp_checksum(udp_sink):
    port = udp_sink.getsockname()[1]
    with csock.RawSocket() as raw:
        good = IPv4(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=40002, dport=port) / b"good"
        bad = (
            IPv4(src="127.0.0.1", dst="127.0.0.1")
            / UDP(sport=40002, dport=port, chksum=0x1234)
            / b"bad!"
        )
        with pytest.raises(PacketError, match="UDP"):
            csock.packet.parse(bytes(bad), verify=True)
        raw.send_packet(bad)
        raw.send_packet(good)
        assert udp_sink.recv(100) == b"good"            # the bad one never arrived
        udp_sink.settimeout(0.3)
        with pytest.raises(TimeoutError):
            udp_sink.recv(100)


@needs_raw
def test_send_packets_batch(udp_sink):
    port = udp_sink.getsockname()[1]
    with csock.RawSocket() as raw:
        packets = [IPv4(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=41000, dport=port)
                   / (b"n%03d" % i) for i in range(100)]
        assert raw.send_packets(packets) == 100
        assert [udp_sink.recv(100) for _ in range(100)] == [b"n%03d" % i for i in range(100)]
        with pytest.raises(ValueError, match="destination"):
            raw.send_packets([UDP(dport=port) / b"no ip layer"])
        # layers, built bytes and an explicit address mixed in one batch, in order
        def from_41001(dst, payload):
            return IPv4(src="127.0.0.1", dst=dst) / UDP(sport=41001, dport=port) / payload

        mixed = [from_41001("127.0.0.1", b"layer"), bytes(from_41001("127.0.0.1", b"bytes")),
                 from_41001("127.0.0.9", b"dst ignored")]
        assert raw.send_packets(mixed[:2]) == 2
        # sent to address, header as built
        assert raw.send_packets(mixed[2:], address="127.0.0.1") == 1
        assert [udp_sink.recv(100) for _ in range(2)] == [b"layer", b"bytes"]


@needs_raw
def test_send_packets_without_header_included(udp_sink):
    port = udp_sink.getsockname()[1]
    with csock.RawSocket(csock.AF_INET, csock.IPPROTO_UDP, header_included=False) as raw:
        packets = [IPv4(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=41002, dport=port)
                   / (b"k%d" % i) for i in range(5)]
        assert raw.send_packets(packets) == 5  # the kernel writes the IP header
        assert [udp_sink.recvfrom(100) for _ in range(5)] == [
            (b"k%d" % i, ("127.0.0.1", 41002)) for i in range(5)
        ]


@needs_raw
@pytest.mark.parametrize("family", [csock.AF_INET, csock.AF_INET6])
def test_header_included_false_on_an_ipproto_raw_socket_is_refused(family):
    """An IPPROTO_RAW socket always takes the IP header from the caller (raw(7)): the kernel
    will not turn IP_HDRINCL off. header_included=False was stored anyway, and every send,
    its IP header cut off, failed with EINVAL: the constructor says so instead."""
    with pytest.raises(ValueError, match="IPPROTO_RAW"):
        csock.RawSocket(family, csock.IPPROTO_RAW, header_included=False)


@needs_raw
def test_header_included_false_turns_off_an_adopted_sockets_ip_hdrincl(udp_sink):
    """An fd adopted with IP_HDRINCL on: header_included=False turns it off, so the kernel
    writes the IP header of what send_packet sends without one (it was left on)."""
    port = udp_sink.getsockname()[1]
    with stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_RAW,
                              stdlib_socket.IPPROTO_UDP) as plain:
        plain.setsockopt(stdlib_socket.IPPROTO_IP, stdlib_socket.IP_HDRINCL, 1)
        with csock.RawSocket(fileno=plain.detach(), header_included=False) as raw:
            assert raw.getsockopt(csock.IPPROTO_IP, csock.IP_HDRINCL) == 0
            raw.send_packet(IPv4(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=41003, dport=port)
                            / b"kernel's header")
            assert udp_sink.recvfrom(100) == (b"kernel's header", ("127.0.0.1", 41003))


@needs_raw
def test_recv_packet_parses_what_a_udp_socket_sent(udp_sink):
    with csock.RawSocket(csock.AF_INET, csock.IPPROTO_UDP) as raw, \
            stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as sender:
        raw.settimeout(2)
        sender.bind(("127.0.0.1", 0))
        sender.sendto(b"seen raw", udp_sink.getsockname())
        sport = sender.getsockname()[1]
        while True:                                      # other UDP traffic may pass by
            p = raw.recv_packet()
            if UDP in p and p[UDP].sport == sport:
                break
        assert isinstance(p, IPv4) and (p.src, p.dst, p.proto) == ("127.0.0.1", "127.0.0.1", 17)
        assert p[UDP].dport == udp_sink.getsockname()[1] and bytes(p[UDP].payload) == b"seen raw"
        assert p.len == 20 + 8 + 8 and p[UDP].len == 16
        # (no verify(): a packet that never left the host carries only the pseudo-header part
        # of its UDP checksum, CHECKSUM_PARTIAL, when a raw socket sees it on loopback)
        assert csock.packet.parse(bytes(p)) == p


@needs_raw
def test_recv_packets_batch_and_from():
    with csock.RawSocket(csock.AF_INET, csock.IPPROTO_UDP) as raw, csock.RawSocket() as out:
        raw.settimeout(2)
        dport = 47000 + os.getpid() % 1000
        out.send_packets([IPv4(src="127.0.0.2", dst="127.0.0.1") / UDP(sport=5, dport=dport)
                          / bytes([i]) for i in range(20)])
        got = []
        while len(got) < 20:
            got.extend(
                p for p in raw.recv_packets(max_messages=64) if UDP in p and p[UDP].dport == dport
            )
        assert [p[UDP].payload[0] for p in got] == list(range(20))
        for p in got:
            p.verify()                                   # csock.packet's checksums, as built
        assert {p.src for p in got} == {"127.0.0.2"}
        out.send_packet(
            IPv4(src="127.0.0.3", dst="127.0.0.1") / UDP(sport=5, dport=dport) / b"from"
        )
        while True:
            p, address = raw.recv_packet_from()
            if p[UDP].dport == dport:
                break
        assert address == ("127.0.0.3", 0) and p.src == "127.0.0.3"


@needs_raw
def test_truncated_packet_is_never_silent():
    with csock.RawSocket(csock.AF_INET, csock.IPPROTO_UDP) as raw, csock.RawSocket() as out:
        raw.settimeout(2)
        dport = 46000 + os.getpid() % 1000
        out.send_packet(
            IPv4(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=6, dport=dport) / (b"z" * 500)
        )
        while True:
            with pytest.raises(PacketError, match="truncated") as info:
                raw.recv_packet(bufsize=100)
            if bytes(info.value.data[22:24]) == dport.to_bytes(2, "big"):
                break
        assert len(info.value.data) == 100


@needs_raw
def test_ipv6_header_included_and_received_without_ip_header():
    with stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM) as sink, \
            csock.RawSocket(csock.AF_INET6, csock.IPPROTO_RAW) as raw, \
            csock.RawSocket(csock.AF_INET6, csock.IPPROTO_UDP) as watcher:
        sink.bind(("::1", 0))
        sink.settimeout(2)
        watcher.settimeout(2)
        port = sink.getsockname()[1]
        assert raw.header_included
        raw.send_packet(IPv6(src="::1", dst="::1") / UDP(sport=42000, dport=port) / b"over v6")
        data, sender = sink.recvfrom(100)
        assert data == b"over v6" and sender[:2] == ("::1", 42000)
        # the raw UDP socket sees the same datagram, from its UDP header
        while True:
            p = watcher.recv_packet()
            if isinstance(p, UDP) and p.dport == port:
                break
        assert p.sport == 42000 and bytes(p.payload) == b"over v6"


# --- ping ------------------------------------------------------------------------------------

def test_ping_summary_follows_iputils_formulas():
    """The loss as iputils prints it (%g: 33.3333%), duplicates counted and their round trips
    in the statistics (a duplicate was dropped without a trace)."""
    from csock._ping import Tally

    tally = Tally()
    for seq in (1, 2, 3):
        tally.sending(seq)
    assert tally.reply(1, 0.0001) and not tally.reply(1, 0.0003) and tally.reply(2, 0.0005)
    assert tally.summary("h", 1.0)[1:] == [
        "3 packets transmitted, 2 received, +1 duplicates, 33.3333% packet loss, time 1000ms",
        "rtt min/avg/max/mdev = 0.100/0.300/0.500/0.163 ms"]
    tally.sending(1)                         # the number sent again (after a wrap): new
    assert tally.reply(1, 0.0001)


@needs_raw
@pytest.mark.slow
def test_ping_wraps_the_sequence_number_after_65535():
    """ICMP's sequence field is 16 bits: request 65,536 goes out as 0 (iputils' ping does so
    too), the session goes on and sums up; no ValueError from the ICMP layer."""
    result = ping("-c", "65538", "-i", "0.00001", "127.0.0.1", timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    replies = [line.split("icmp_seq=")[1].split()[0]
               for line in result.stdout.splitlines() if " bytes from " in line]
    assert replies[-4:] == ["65535", "0", "1", "2"]     # requests 65,535 to 65,538
    assert "65538 packets transmitted, 65538 received, 0% packet loss" in result.stdout


@needs_raw
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_ping_loopback(host):
    result = ping("-c", "3", "-i", "0.05", host)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    replies = [line for line in lines if " bytes from " in line]
    assert [line.split("icmp_seq=")[1].split()[0] for line in replies] == ["1", "2", "3"]
    assert all(line.startswith("64 bytes from ") for line in replies)
    assert "3 packets transmitted, 3 received, 0% packet loss" in result.stdout
    assert "rtt min/avg/max/mdev = " in result.stdout


def test_ping_bad_usage():
    for args in (["-c", "0", "x"], ["-i", "-1", "x"], []):
        assert ping(*args).returncode == 2
    assert ping("-c", "1", "no-such-host.invalid").returncode == 2


@pytest.mark.parametrize("args, message", [
    (["-c", "-1", "x"], "argument -c: must be a positive integer, not -1"),
    (["-c", "0", "x"], "argument -c: must be a positive integer, not 0"),
    (["-c", "abc", "x"], "argument -c: must be a positive integer, not 'abc'"),
    (["-i", "-0.5", "x"], "argument -i: must be a positive number of seconds, not -0.5"),
    (["-W", "soon", "x"], "argument -W: must be a positive number of seconds, not 'soon'"),
    (["-W", "1e308", "x"],
     "argument -W: must be a positive number of seconds up to 1000000000, not 1e308"),
    (["-i", "1e10", "x"],
     "argument -i: must be a positive number of seconds up to 1000000000, not 1e10"),
])
def test_ping_bad_numbers_say_what_is_expected(args, message):
    """As iputils: a count or interval that is negative or not a number is a usage error that
    says what is expected, never argparse's "expected one argument" nor a function's name."""
    result = ping(*args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"python -m csock ping: error: {message}"
    assert "positive_" not in result.stderr


def test_ping_unknown_option_after_the_host_prints_pings_usage():
    result = ping("127.0.0.1", "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m csock ping ")
    assert (
        result.stderr.splitlines()[-1]
        == "python -m csock ping: error: unrecognized arguments: --bogus"
    )


@needs_raw
def test_ping_ipv6_lines_carry_the_hop_limit():
    """iputils prints ttl= for IPv4 and hlim= for IPv6 (the IPV6_HOPLIMIT ancillary data)."""
    v4, v6 = (ping("-c", "1", host) for host in ("127.0.0.1", "::1"))
    assert v4.returncode == 0 and v6.returncode == 0, (v4.stderr, v6.stderr)
    (line4,) = [line for line in v4.stdout.splitlines() if " bytes from " in line]
    (line6,) = [line for line in v6.stdout.splitlines() if " bytes from " in line]
    assert " ttl=64 " in line4 and "hlim" not in line4
    assert line6.startswith("64 bytes from ::1: icmp_seq=1 hlim=64 time=") and "ttl" not in line6


@pytest.fixture(scope="module")
def hosts():
    with veth_pair() as h:
        yield h


@needs_raw
@pytest.mark.parametrize("version", ["4", "6"])
def test_ping_between_namespaces(hosts, version):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = in_netns(hosts["a"], [sys.executable, "-m", "csock", "ping", "-c", "2", "-i", "0.1",
                                 hosts["b" + version]], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE,
                    text=True, env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"bytes from {hosts['b' + version]}: icmp_seq=1" in out
    assert "2 packets transmitted, 2 received" in out


@needs_raw
def test_ping_without_replies_exits_1(hosts):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = in_netns(hosts["a"],
                    [sys.executable, "-m", "csock", "ping", "-c", "2", "-i", "0.1", "-W", "0.3",
                                 "10.77.0.99"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True, env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "2 packets transmitted, 0 received, 100% packet loss" in out


@needs_raw
@pytest.mark.parametrize("header_included", [True, False], ids=["hdrincl", "kernel-header"])
@pytest.mark.parametrize("batch", [False, True], ids=["send_packet", "send_packets"])
def test_a_packet_without_a_source_is_checksummed_with_the_kernels(udp_sink, header_included,
                                                                   batch):
    """The contract's own example leaves src unset (0.0.0.0): the kernel sends from its
    route's address, so the UDP checksum over the pseudo-header must be computed with that
    address (with 0.0.0.0 the receiving kernel dropped the datagram)."""
    port = udp_sink.getsockname()[1]
    proto = csock.IPPROTO_RAW if header_included else csock.IPPROTO_UDP
    with csock.RawSocket(csock.AF_INET, proto, header_included=header_included) as raw:
        packet = IPv4(dst="127.0.0.1") / UDP(sport=41003, dport=port) / b"payload"
        if batch:
            assert raw.send_packets([packet, packet]) == 2
        else:
            raw.send_packet(packet)
        expected = 2 if batch else 1
        assert [udp_sink.recvfrom(100) for _ in range(expected)] == [
            (b"payload", ("127.0.0.1", 41003))] * expected
        assert packet.src == "0.0.0.0"          # the caller's packet is left as it was


@needs_raw
def test_ping_where_the_network_is_unreachable_says_so_and_sums_up(hosts):
    """No traceback: each failed send is a line on stderr (as iputils' "ping: sendmsg: ..."),
    then the summary, and exit status 1 (no reply came)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = in_netns(hosts["a"], [sys.executable, "-m", "csock", "ping", "-c", "2", "-i", "0.1",
                                 "-W", "0.3", "192.0.2.1"], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True, env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err
    assert err.count("Network is unreachable") == 2, err
    assert "2 packets transmitted, 0 received, +2 errors, 100% packet loss" in out
