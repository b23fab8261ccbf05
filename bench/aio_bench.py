"""Framed echo on asyncio loops: csock.aio versus asyncio streams, on asyncio and on uvloop.

Workload: C connections each exchange M messages of S bytes with an echo server, framed
with a 4-byte big-endian length (csock.aio.FramedStream on one side; readexactly(4) +
readexactly(n) and write + drain on the streams side). The server runs in a child process
and the clients in this one, both with the same implementation and loop, so each gets a core.
The clock runs from the moment every connection is open until the last echo is back.

    python bench/aio_bench.py [--connections 1000] [--messages 100] [--size 64]
                              [--mode pingpong|pipelined] [--repeat 3]

pingpong: each connection sends one message and waits for its echo, M times.
pipelined: each connection sends its M messages at once, then reads the M echoes.

    python bench/aio_bench.py --workload datagram [--datagrams 200000] [--window 128]

datagram: UDP echo over loopback; the client keeps a window of W datagrams in flight.
csock.aio.create_datagram_endpoint (one datagrams_received per wake-up, send_batch) against
loop.create_datagram_endpoint (one datagram_received per datagram, sendto each).

The same comparisons, pinned, interleaved over rounds and with targets, are rows of
``python -m csock bench`` (aio-echo, aio-echo-pingpong, aio-udp, aio-scale; csock/_bench/aio.py).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

VARIANTS = [
    ("csock.aio", "asyncio"),
    ("csock.aio", "uvloop"),
    ("streams", "asyncio"),
    ("streams", "uvloop"),
]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


# --- servers --------------------------------------------------------------------------------

async def csock_server() -> Any:
    import csock.aio

    async def echo(stream: csock.aio.FramedStream) -> None:
        while True:
            messages = await stream.recv_many()
            if not messages:
                return
            await stream.send_many(messages)

    return await csock.aio.start_framed_server(echo, "127.0.0.1", 0, backlog=4096)


async def streams_server() -> Any:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(4)
                body = await reader.readexactly(int.from_bytes(header, "big"))
                writer.write(header + body)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4096)


def serve(impl: str, loop_kind: str) -> None:
    loop = new_loop(loop_kind)
    asyncio.set_event_loop(loop)

    async def main() -> None:
        server = await (csock_server() if impl == "csock.aio" else streams_server())
        print(server.sockets[0].getsockname()[1], flush=True)
        stop = asyncio.Event()
        loop.add_reader(sys.stdin.fileno(), stop.set)   # parent closes stdin: stop
        await stop.wait()
        server.close()

    loop.run_until_complete(main())
    loop.close()


# --- clients --------------------------------------------------------------------------------

async def csock_clients(port: int, connections: int, messages: int, size: int, mode: str) -> float:
    import csock.aio
    streams = await asyncio.gather(*(csock.aio.open_framed_connection("127.0.0.1", port)
                                     for _ in range(connections)))

    async def client(k: int, stream: csock.aio.FramedStream) -> None:
        msg = k.to_bytes(4, "big") + bytes(size - 4)
        if mode == "pingpong":
            for _ in range(messages):
                await stream.send(msg)
                if bytes(await stream.recv()) != msg:
                    raise AssertionError("echo differs")
        else:
            await stream.send_many([msg] * messages)
            got = 0
            while got < messages:
                batch = await stream.recv_many()
                if not batch or any(bytes(m) != msg for m in batch):
                    raise AssertionError("echo differs or ended early")
                got += len(batch)

    start = time.perf_counter()
    await asyncio.gather(*(client(k, s) for k, s in enumerate(streams)))
    elapsed = time.perf_counter() - start
    for s in streams:
        s.close()
    await asyncio.gather(*(s.wait_closed() for s in streams))
    return elapsed


async def streams_clients(port: int, connections: int, messages: int, size: int, mode: str) -> float:
    pairs = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                   for _ in range(connections)))

    async def client(k: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        msg = k.to_bytes(4, "big") + bytes(size - 4)
        frame = len(msg).to_bytes(4, "big") + msg
        if mode == "pingpong":
            for _ in range(messages):
                writer.write(frame)
                await writer.drain()
                header = await reader.readexactly(4)
                if await reader.readexactly(int.from_bytes(header, "big")) != msg:
                    raise AssertionError("echo differs")
        else:
            writer.write(frame * messages)
            await writer.drain()
            for _ in range(messages):
                header = await reader.readexactly(4)
                if await reader.readexactly(int.from_bytes(header, "big")) != msg:
                    raise AssertionError("echo differs")

    start = time.perf_counter()
    await asyncio.gather(*(client(k, r, w) for k, (r, w) in enumerate(pairs)))
    elapsed = time.perf_counter() - start
    for _, w in pairs:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in pairs), return_exceptions=True)
    return elapsed


# --- datagram echo --------------------------------------------------------------------------

RCVBUF = 4 * 2**20


async def datagram_server(impl: str) -> Any:
    loop = asyncio.get_running_loop()
    if impl == "csock.aio":
        import csock.aio

        class BatchEcho(csock.aio.BatchDatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)

            def datagrams_received(self, datagrams: list[Any]) -> None:
                self.transport.send_batch([(d.data, d.address) for d in datagrams])

        transport, _ = await csock.aio.create_datagram_endpoint(BatchEcho, local_addr=("127.0.0.1", 0),
                                                                max_messages=256, bufsize=2048)
    else:
        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.transport.sendto(data, addr)

        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    return transport


async def datagram_client(impl: str, port: int, total: int, window: int, size: int) -> tuple[float, int]:
    """Echo `total` datagrams keeping `window` in flight; returns (seconds, datagrams lost)."""
    loop = asyncio.get_running_loop()
    state = {"got": 0}
    progress = asyncio.Event()
    payload = bytes(size)
    if impl == "csock.aio":
        import csock.aio

        class Counter(csock.aio.BatchDatagramProtocol):
            def datagrams_received(self, datagrams: list[Any]) -> None:
                state["got"] += len(datagrams)
                progress.set()

        transport, _ = await csock.aio.create_datagram_endpoint(
            Counter, remote_addr=("127.0.0.1", port), max_messages=256, bufsize=2048)

        def send(n: int) -> None:
            transport.send_batch([payload] * n)
    else:
        class Counter1(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                state["got"] += 1
                progress.set()

        transport, _ = await loop.create_datagram_endpoint(Counter1, remote_addr=("127.0.0.1", port))

        def send(n: int) -> None:
            for _ in range(n):
                transport.sendto(payload)
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sent = lost = 0
    start = time.perf_counter()
    while state["got"] + lost < total:
        in_flight = sent - state["got"] - lost
        if sent < total and in_flight < window:
            n = min(window - in_flight, total - sent)
            send(n)
            sent += n
            continue
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), 0.5)
        except asyncio.TimeoutError:        # whatever is still in flight is lost
            lost = sent - state["got"]
    elapsed = time.perf_counter() - start
    transport.close()
    return elapsed, lost


def serve_datagram(impl: str, loop_kind: str) -> None:
    loop = new_loop(loop_kind)
    asyncio.set_event_loop(loop)

    async def main() -> None:
        transport = await datagram_server(impl)
        print(transport.get_extra_info("sockname")[1], flush=True)
        stop = asyncio.Event()
        loop.add_reader(sys.stdin.fileno(), stop.set)
        await stop.wait()
        transport.close()

    loop.run_until_complete(main())
    loop.close()


def measure(impl: str, loop_kind: str, args: argparse.Namespace) -> float:
    server = subprocess.Popen([sys.executable, __file__, "--serve", impl, loop_kind, args.workload],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        loop = new_loop(loop_kind)
        try:
            if args.workload == "datagram":
                elapsed, lost = loop.run_until_complete(
                    datagram_client(impl, port, args.datagrams, args.window, args.size))
                if lost:
                    print(f"  {impl} on {loop_kind}: {lost} datagrams lost", file=sys.stderr)
                return (args.datagrams - lost) / elapsed
            run = csock_clients if impl == "csock.aio" else streams_clients
            elapsed = loop.run_until_complete(run(port, args.connections, args.messages, args.size, args.mode))
        finally:
            loop.close()
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    return args.connections * args.messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--mode", choices=["pingpong", "pipelined"], default="pingpong")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median reported)")
    parser.add_argument("--workload", choices=["framed", "datagram"], default="framed")
    parser.add_argument("--datagrams", type=int, default=200_000, help="datagram workload: datagrams echoed")
    parser.add_argument("--window", type=int, default=128, help="datagram workload: datagrams in flight")
    parser.add_argument("--serve", nargs=3, metavar=("IMPL", "LOOP", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        impl, loop_kind, workload = args.serve
        (serve_datagram if workload == "datagram" else serve)(impl, loop_kind)
        return
    if args.size < 4:
        parser.error("--size must be at least 4")
    variants = list(VARIANTS)
    try:
        import uvloop  # noqa: F401
    except ImportError:
        variants = [v for v in variants if v[1] != "uvloop"]
        print("uvloop not installed: its rows are skipped", file=sys.stderr)
    rates: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    for _ in range(args.repeat):            # interleaved, so drift hits every variant alike
        for variant in variants:
            rates[variant].append(measure(*variant, args))
    median = {v: statistics.median(r) for v, r in rates.items()}
    if args.workload == "datagram":
        print(f"UDP echo: {args.datagrams} datagrams of {args.size} B, {args.window} in flight, "
              f"median of {args.repeat}")
        label = "asyncio"
    else:
        print(f"framed echo, {args.mode}: {args.connections} connections x {args.messages} messages "
              f"of {args.size} B, median of {args.repeat}")
        label = "streams"
    base = median.get(("streams", "uvloop"))
    print(f"{'implementation':<12} {'loop':<8} {'msgs/s':>12} {'vs uvloop ' + label:>18}")
    for (impl, loop_kind), rate in median.items():
        impl = impl if impl != "streams" else label
        ratio = f"{rate / base:.2f}x" if base else "-"
        print(f"{impl:<12} {loop_kind:<8} {rate:>12,.0f} {ratio:>18}")


if __name__ == "__main__":
    main()
