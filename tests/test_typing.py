"""The public surface is typed: py.typed, stubs for the extension, mypy --strict clean, and
the stubs name what the compiled module has."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import csock
from csock import _fastio, _packet

PACKAGE = Path(csock.__file__).parent
SAMPLE = '''
import csock

a, b = csock.socketpair()
assert isinstance(a, csock.StreamSocket) and isinstance(b, csock.StreamSocket)
n: int = a.send_buffers([b"x", bytearray(b"y")])
data: bytes = b.recv_exactly(2)
stream = csock.FramedStream(a, max_size=1024)
stream.send_many([b"m"])
message: csock.MessageView = csock.FramedStream(b).recv()
raw: bytes = bytes(message)

from csock.packet import IPv4, UDP, TCP, PacketError, parse, checksum
pkt = IPv4(dst="127.0.0.1") / UDP(dport=9) / b"payload"
wire: bytes = bytes(pkt)
parsed = parse(wire, first="ip", verify=True)
port: int = parsed[UDP].dport
size: int | None = parsed[UDP].len
seg = TCP(flags="SA")
seg.flags = 0x12
parsed[IPv4].src = "10.0.0.1"
ck: int = checksum(wire)

# No isinstance needed: the socket kind argument decides the class (overloads).
from typing import Any, assert_type
assert_type(csock.socketpair(), tuple[csock.StreamSocket, csock.StreamSocket])
assert_type(csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM),
            tuple[csock.DatagramSocket, csock.DatagramSocket])
assert_type(csock.socketpair(type=csock.SOCK_SEQPACKET),
            tuple[csock.SeqPacketSocket, csock.SeqPacketSocket])
assert_type(csock.socket(), csock.StreamSocket)
assert_type(csock.socket(csock.AF_INET, csock.SOCK_STREAM), csock.StreamSocket)
assert_type(csock.socket(csock.AF_INET, csock.SOCK_DGRAM), csock.DatagramSocket)
assert_type(csock.socket(csock.AF_UNIX, type=csock.SOCK_SEQPACKET), csock.SeqPacketSocket)
assert_type(csock.socket(csock.AF_INET, csock.SOCK_RAW, csock.IPPROTO_UDP), csock.RawSocket)
kind: int = csock.SOCK_DGRAM
assert_type(csock.socket(csock.AF_INET, kind), csock.socket)
assert_type(csock.socketpair(csock.AF_UNIX, kind), tuple[Any, Any])
assert_type(csock.create_connection(("127.0.0.1", 9)), csock.StreamSocket)
'''


EXTENSIONS = [_fastio, _packet]


def test_py_typed_and_stubs_ship():
    assert (PACKAGE / "py.typed").is_file()
    for module in EXTENSIONS:
        assert (PACKAGE / f"{module.__name__.split('.')[-1]}.pyi").is_file()


@pytest.mark.parametrize("module", EXTENSIONS, ids=lambda m: m.__name__)
def test_stub_names_exist_in_the_extension(module):
    stub = (PACKAGE / f"{module.__name__.split('.')[-1]}.pyi").read_text()
    names = [line.split("(")[0].split(":")[0].split()[1] for line in stub.splitlines()
             if line.startswith(("def ", "class "))]
    assert names
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"stubbed but not in {module.__name__}: {missing}"
    public = [n for n, v in vars(module).items()
              if not n.startswith("_") and (inspect.isclass(v) or callable(v))
              and getattr(v, "__module__", module.__name__) == module.__name__]
    unstubbed = [n for n in public if n not in names]
    assert not unstubbed, f"in {module.__name__} but not stubbed: {unstubbed}"


def test_mypy_strict_on_package_and_usage(tmp_path):
    pytest.importorskip("mypy")
    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           str(PACKAGE), str(sample)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stubtest_against_the_compiled_modules():
    """mypy's stubtest: every stubbed signature matches the compiled extensions (Cython's own
    helper names and the pre-3.12 buffer slot are allowlisted, with reasons, in the file)."""
    pytest.importorskip("mypy")
    allowlist = Path(__file__).parent / "stubtest_allowlist.txt"
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent))
    modules = [m.__name__ for m in EXTENSIONS]     # one run: the allowlist serves both
    proc = subprocess.run([sys.executable, "-m", "mypy.stubtest", *modules, "--allowlist",
                           str(allowlist)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(PACKAGE.parent))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
