"""csock.aio as a package: reachable from ``import csock``, type-checked under mypy --strict,
and run on the loop each test asks for (the ``run`` fixture in conftest.py)."""
from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import csock
import csock.aio

pytestmark = pytest.mark.timeout(60)


def test_loop_is_the_one_asked_for(run: Any, loop_kind: str) -> None:
    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__
    module = run(main())
    assert module.startswith("uvloop") if loop_kind == "uvloop" else module.startswith("asyncio")


def test_csock_aio_reachable_from_csock() -> None:
    import subprocess
    import sys

    code = ("import csock; "
            "print(csock.aio.FramedStream.__module__, csock.aio.start_framed_server.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["csock.aio.framed", "start_framed_server"], out.stderr


AIO_SAMPLE = '''
import asyncio
import csock
import csock.aio


class Proto(csock.aio.BatchDatagramProtocol):
    def datagrams_received(self, datagrams: list[csock.Datagram]) -> None:
        first: csock.MessageView = datagrams[0].data


async def handler(stream: csock.aio.FramedStream) -> None:
    message: csock.MessageView = await stream.recv()
    messages: list[csock.MessageView] = await stream.recv_many(16)
    await stream.send(message)
    await stream.send_many(messages)


async def use(sock: csock.DatagramSocket) -> None:
    batch: list[csock.Datagram] = await csock.aio.recv_batch(sock, max_messages=8)
    sent: int = await csock.aio.send_batch(sock, [b"x", (b"y", ("127.0.0.1", 9))])
    server: csock.aio.FramedServer = await csock.aio.start_framed_server(handler, "127.0.0.1", 0,
                                                                         reuse_port=True)
    async with server:
        stream = await csock.aio.open_framed_connection("127.0.0.1", 1)
        async with stream:
            await stream.send(b"hello")
    transport, proto = await csock.aio.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    transport.send_batch([b"a"], ("127.0.0.1", 9))
    size: int = transport.get_write_buffer_size()
    transport.close()
    await stream.wait_closed()
'''


def test_mypy_strict_on_aio_usage(tmp_path: Any) -> None:
    import subprocess
    import sys
    pytest.importorskip("mypy")
    sample = tmp_path / "aio_sample.py"
    sample.write_text(AIO_SAMPLE)
    package = os.path.dirname(csock.aio.__file__)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict",
                           "--no-incremental", package, str(sample)],
                          capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(package)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
