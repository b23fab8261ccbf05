"""Two hosts: network namespaces joined by a veth pair (tests/netns.py; skipped without root).

Datagrams between the namespaces carry the sender's real address; a SEQPACKET/SPP exchange
runs between them over AF_UNIX bound in a shared directory (path-named AF_UNIX sockets are
found through the filesystem, so they cross network namespaces; abstract ones do not)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from .children import script_output
from .netns import in_netns, veth_pair

pytestmark = pytest.mark.timeout(120)

UDP_RECEIVER = """
import csock, json, sys
family = csock.AF_INET6 if ":" in sys.argv[1] else csock.AF_INET
rx = csock.socket(family, csock.SOCK_DGRAM)
rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 4 << 20)
rx.bind((sys.argv[1], 0))
print(rx.getsockname()[1], flush=True)
rx.settimeout(20)
got = []
while len(got) < int(sys.argv[2]):
    got.extend((bytes(d.data).decode(), list(d.address[:2]))
               for d in rx.recv_batch(max_messages=1024))
print(json.dumps(got), flush=True)
"""

UDP_SENDER = """
import csock, sys
family = csock.AF_INET6 if ":" in sys.argv[1] else csock.AF_INET
tx = csock.socket(family, csock.SOCK_DGRAM)
tx.bind((sys.argv[1], 0))
target = (sys.argv[2], int(sys.argv[3]))
n = int(sys.argv[4])
assert tx.send_batch([str(i).encode() for i in range(n)], target) == n
print(tx.getsockname()[1], flush=True)
"""

SPP_SERVER = """
import csock, json, sys
server = csock.SeqPacketSocket()
server.bind(sys.argv[1])
server.listen()
print("ready", flush=True)
conn, _ = server.accept()
conn.settimeout(20)
got = []
while len(got) < int(sys.argv[2]):
    got.extend((h.sequence, h.source_connection, bytes(d).decode()) for h, d in conn.recv_records())
conn.send_record(b"done", header=csock.SPPHeader(source_connection=2, destination_connection=1))
print(json.dumps(got), flush=True)
"""

SPP_CLIENT = """
import csock, sys
client = csock.SeqPacketSocket()
client.connect(sys.argv[1])
client.default_header = csock.SPPHeader(source_connection=1, destination_connection=2)
n = int(sys.argv[2])
assert client.send_records([b"rec%d" % i for i in range(n)]) == n
header, data = client.recv_record()
assert bytes(data) == b"done" and header.source_connection == 2, (header, data)
print("ok", flush=True)
"""


def python(ns: str, code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return in_netns(ns, [sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def hosts():
    with veth_pair() as h:
        yield h


@pytest.mark.parametrize("version", ["4", "6"])
def test_datagrams_carry_the_senders_real_address(hosts, version):
    a, b = hosts["a" + version], hosts["b" + version]
    n = 2000
    receiver = python(hosts["b"], UDP_RECEIVER, b, str(n))
    port = receiver.stdout.readline().strip()
    assert port, receiver.stderr.read()
    sender = python(hosts["a"], UDP_SENDER, a, b, port, str(n))
    out, err = sender.communicate(timeout=60)
    assert sender.returncode == 0, err
    sender_port = int(out.strip())
    got = json.loads(receiver.communicate(timeout=60)[0])
    assert sorted(int(data) for data, _ in got) == list(range(n))
    assert {tuple(address) for _, address in got} == {(a, sender_port)}


def test_seqpacket_spp_over_a_shared_directory(hosts, tmp_path):
    path = str(tmp_path / "spp.sock")
    n = 3000
    server = python(hosts["b"], SPP_SERVER, path, str(n))
    assert server.stdout.readline().strip() == "ready", server.stderr.read()
    client = python(hosts["a"], SPP_CLIENT, path, str(n))
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0 and out.strip() == "ok", err
    got = json.loads(server.communicate(timeout=60)[0])
    assert got == [[i, 1, f"rec{i}"] for i in range(n)]


PACKET_NAMES = """
import ctypes, socket, subprocess, time
import csock

def sh(command):
    subprocess.run(command, shell=True, check=True, capture_output=True)

def marked_on(taps):
    time.sleep(0.2)
    seen = {}
    for name, tap in taps.items():
        seen[name] = 0
        while True:
            try:
                seen[name] += b"MARK" in tap.recv(2000)
            except BlockingIOError:
                break
            except OSError as error:        # (ENETDOWN, once, after a rename)
                assert error.errno == 100, error
    return seen

PROTO = 0x88B5
sh("ip link set lo up; ip link add csa type veth peer name csap;"
   " ip link add csb type veth peer name csbp;"
   " for i in csa csap csb csbp; do ip link set $i up; done")
taps = {}
for name in ("csa", "csb"):
    taps[name] = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    taps[name].bind((name + "p", 3))
    taps[name].setblocking(False)
receiver = csock.socket(csock.AF_PACKET, csock.SOCK_DGRAM, socket.htons(PROTO))
receiver.bind(("csap", PROTO))
receiver.settimeout(5)
sender = csock.socket(csock.AF_PACKET, csock.SOCK_DGRAM, 0)
marked_on(taps)
for name in ("csap", "csq"):            # the same sender before and after a rename
    sender.send_batch([b"MARK" * 15], ("csa", PROTO, 0, 0, b"\\xff" * 6))
    for attempt in range(3):            # (the rename took the link down: ENETDOWN first)
        try:
            print(receiver.recv_batch()[0].address[0])
            break
        except OSError as error:
            assert error.errno == 100, error
    sh("ip link set csap down; ip link set csap name csq; ip link set csq up")
    time.sleep(0.2)
marked_on(taps)
# this process moves to another namespace, where "csb" is another interface's number there
assert ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0      # CLONE_NEWNET
sh("ip link add csb type veth peer name csbp")
sender.send_batch([b"MARK" * 15], ("csb", PROTO, 0, 0, b"\\xff" * 6))
print(marked_on(taps))
sender.send_batch([b"MARK" * 15], ("csa", PROTO, 0, 0, b"\\xff" * 6))
print(receiver.recv_batch()[0].address[0])                 # named in the socket's namespace
import csock.uring                                          # the ring's converters (or fallback)
marked_on(taps)
csock.uring.send_many([(sender, b"MARK" * 15, ("csb", PROTO, 0, 0, b"\\xff" * 6))])
print(marked_on(taps))
sender.send_batch([b"MARK" * 15], ("csa", PROTO, 0, 0, b"\\xff" * 6))
time.sleep(0.2)
print(csock.uring.recv_many([receiver])[0][0].address[0])
"""


def test_packet_interface_names_are_the_sockets_namespace(tmp_path):
    """An AF_PACKET interface name in a batch was looked up in the calling thread's network
    namespace, not the socket's (the stdlib asks the socket, SIOCGIFINDEX/SIOCGIFNAME): after
    the thread moved, a frame for "csb" left by another interface, and senders were named
    after another namespace's interfaces. And the name is the interface's now: after a
    rename, recv_batch went on naming a sender as the batch before had."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip")
    lines = script_output(tmp_path, PACKET_NAMES, prefix=("unshare", "-n"))
    assert lines == ["csap", "csq", "{'csa': 0, 'csb': 1}", "csq", "{'csa': 0, 'csb': 1}", "csq"]

