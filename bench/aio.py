"""The asyncio workloads of ``python -m csock bench``: csock.aio against asyncio's own streams
and datagram endpoints, on the default loop and on uvloop.

Implementations: ``csock`` (csock.aio on uvloop; its datagram endpoint's default
``offload=True``: UDP GSO and GRO), ``csock-plain`` (aio-udp only: the same with
``offload=False``, plain sendmmsg/recvmmsg), ``csock-asyncio`` (csock.aio on the default
loop), ``uvloop`` and ``asyncio`` (the loop's own streams or ``loop.create_datagram_endpoint``),
and ``csock-xK`` (csock.aio on uvloop, the server in K processes sharing one port).

aio-echo / aio-echo-pingpong / aio-scale (transport "tcp-many"): framed echo (4-byte
big-endian length, 64-byte messages starting with the connection number and a sequence
number). The server binds 127.0.0.1:PORT with SO_REUSEPORT, prints "ready", echoes until its
stdin closes. The client opens CONNECTIONS connections and, before its clock starts, has one
message (sequence 0) echoed on each: every connection is then accepted and served, so the
timed window holds the echoes and nothing else. The N timed messages are shared out over the
connections; each sends its share in bursts of BURST (all sent, then every echo read;
pingpong: one at a time) and checks every echo (length, connection, sequence). The clock
stops at the last echo.

(The figure once published, 9.61x uvloop, came from 27 ms windows: 200 fresh connections of
100 messages, all in flight at once, the clock started once the client's connects returned,
whether or not the server had accepted. Windows that short swing widely: see CHANGELOG.md,
Benchmark history.)
"""
from __future__ import annotations

import asyncio
import json
import socket as stdlib
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import csock
import csock.aio

from .workers import BATCH, CREDIT_EVERY, SEQ, DataMismatch, credit_window, datagrams

CONNECTIONS = 100                  # aio-echo: connections the client keeps open
BURST = 100                        # aio-echo: messages sent before their echoes are read
SIZE = 64                          # aio-echo: bytes per message (connection, sequence, filler)
ECHO = struct.Struct("!IQ")        # the head of each echo message
FRAME = struct.Struct("!I")
SILENCE = 1.0                      # aio-udp: seconds without traffic that end a run


def flavour(impl: str) -> tuple[str, str]:
    """(library, loop) of an implementation: library "csock" or "stdlib", loop "uvloop" or
    "asyncio"."""
    if impl in ("csock", "csock-plain") or impl.startswith("csock-x"):
        return "csock", "uvloop"
    if impl == "csock-asyncio":
        return "csock", "asyncio"
    if impl in ("uvloop", "asyncio"):
        return "stdlib", impl
    raise ValueError(f"unknown asyncio implementation {impl!r}")


def server_processes(impl: str) -> int:
    """How many server processes share the port: K for csock-xK, else 1."""
    return int(impl[len("csock-x"):]) if impl.startswith("csock-x") else 1


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run_on(kind: str, coroutine: Any) -> Any:
    loop = new_loop(kind)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def split(n: int) -> list[int]:
    """Timed messages per connection: n shared out over CONNECTIONS connections (n of one
    message each when n is smaller)."""
    connections = max(1, min(n, CONNECTIONS))
    share, extra = divmod(n, connections)
    return [share + (conn < extra) for conn in range(connections)]


def bursts(items: list[Any]) -> list[list[Any]]:
    return [items[i:i + BURST] for i in range(0, len(items), BURST)]


def messages_for(conn: int, count: int) -> list[bytes]:
    filler = b"e" * (SIZE - ECHO.size)
    return [ECHO.pack(conn, seq) + filler for seq in range(count)]


def check(conn: int, seq: int, message: Any) -> None:
    if len(message) != SIZE:
        raise DataMismatch(f"connection {conn}: echo {seq} has {len(message)} bytes, not {SIZE}")
    got_conn, got_seq = ECHO.unpack_from(message)
    if got_conn != conn or got_seq != seq:
        raise DataMismatch(f"connection {conn}: expected echo {seq}, got connection {got_conn} "
                           f"echo {got_seq}")


# --- framed echo: servers ---------------------------------------------------------------------

async def csock_echo(stream: csock.aio.FramedStream) -> None:
    while messages := await stream.recv_many():
        await stream.send_many(messages)


async def streams_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            header = await reader.readexactly(4)
            body = await reader.readexactly(FRAME.unpack(header)[0])
            writer.write(header + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def echo_server(library: str, port: int) -> None:
    """Serve 127.0.0.1:port (SO_REUSEPORT: other processes may serve it too) until stdin closes."""
    loop = asyncio.get_running_loop()
    server: Any
    if library == "csock":
        server = await csock.aio.start_framed_server(csock_echo, "127.0.0.1", port, reuse_port=True,
                                                     backlog=4096)
    else:
        server = await asyncio.start_server(streams_echo, "127.0.0.1", port, reuse_port=True,
                                            backlog=4096)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)       # the runner closes stdin: stop
    await stop.wait()
    loop.remove_reader(sys.stdin.fileno())
    server.close()
    if library == "csock":
        server.abort_clients()
    await server.wait_closed()


# --- framed echo: clients ---------------------------------------------------------------------

async def csock_clients(port: int, counts: list[int], pingpong: bool) -> tuple[float, int]:
    streams = await asyncio.gather(*(csock.aio.open_framed_connection("127.0.0.1", port)
                                     for _ in counts))
    outgoing = [messages_for(conn, count + 1) for conn, count in enumerate(counts)]

    async def warm_up(conn: int, stream: csock.aio.FramedStream) -> None:
        await stream.send(outgoing[conn][0])
        check(conn, 0, await stream.recv())

    async def client(conn: int, stream: csock.aio.FramedStream) -> int:
        seq = 1
        if pingpong:
            for message in outgoing[conn][1:]:
                await stream.send(message)
                check(conn, seq, await stream.recv())
                seq += 1
            return seq - 1
        for burst in timed[conn]:
            await stream.send_many(burst)
            end = seq + len(burst)
            while seq < end:
                batch = await stream.recv_many()
                if not batch:
                    raise DataMismatch(f"connection {conn}: end of stream after {seq} echoes")
                for echo in batch:
                    check(conn, seq, echo)
                    seq += 1
        return seq - 1

    await asyncio.gather(*(warm_up(k, s) for k, s in enumerate(streams)))
    timed = [bursts(mine[1:]) for mine in outgoing]
    start = time.perf_counter()
    echoed = await asyncio.gather(*(client(k, s) for k, s in enumerate(streams)))
    elapsed = time.perf_counter() - start
    for s in streams:
        s.close()
    await asyncio.gather(*(s.wait_closed() for s in streams))
    return elapsed, sum(echoed)


async def streams_clients(port: int, counts: list[int], pingpong: bool) -> tuple[float, int]:
    pairs = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in counts))
    header = FRAME.pack(SIZE)
    outgoing = [[header + m for m in messages_for(conn, count + 1)]
                for conn, count in enumerate(counts)]

    async def echo(conn: int, seq: int, reader: asyncio.StreamReader) -> None:
        length = FRAME.unpack(await reader.readexactly(4))[0]
        check(conn, seq, await reader.readexactly(length))

    async def warm_up(
        conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(outgoing[conn][0])
        await writer.drain()
        await echo(conn, 0, reader)

    async def client(conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        seq = 1
        if pingpong:
            for frame in outgoing[conn][1:]:
                writer.write(frame)
                await writer.drain()
                await echo(conn, seq, reader)
                seq += 1
            return seq - 1
        for burst, size in timed[conn]:
            writer.write(burst)
            await writer.drain()
            for _ in range(size):
                await echo(conn, seq, reader)
                seq += 1
        return seq - 1

    await asyncio.gather(*(warm_up(k, r, w) for k, (r, w) in enumerate(pairs)))
    timed = [[(b"".join(burst), len(burst)) for burst in bursts(mine[1:])] for mine in outgoing]
    start = time.perf_counter()
    echoed = await asyncio.gather(*(client(k, r, w) for k, (r, w) in enumerate(pairs)))
    elapsed = time.perf_counter() - start
    for _, w in pairs:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in pairs), return_exceptions=True)
    return elapsed, sum(echoed)


def echo_side(workload: str, impl: str, role: str, n: int, port: int) -> tuple[float, int] | None:
    """One side of a framed echo run; the client returns (elapsed, echoes checked), the server
    None (it prints "ready" once listening and serves until its stdin closes)."""
    library, loop = flavour(impl)
    if role == "server":
        run_on(loop, echo_server(library, port))
        return None
    clients = csock_clients if library == "csock" else streams_clients
    result: tuple[float, int] = run_on(loop, clients(port, split(n), workload.endswith("pingpong")))
    return result


# --- UDP one way with a credit window ---------------------------------------------------------


class Receiver:
    """The receiving side's bookkeeping: sequence checks (increasing; gaps are losses),
    credits every CREDIT_EVERY datagrams and at the end, the clock, the end of the run."""

    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        self.n, self.done = n, done
        self.next = self.received = self.credited = 0
        self.first = self.last = 0.0
        self.send: Callable[[bytes], None] = lambda data: None

    def credit_if_due(self) -> None:
        if self.received - self.credited >= CREDIT_EVERY or self.next == self.n:
            self.send(SEQ.pack(self.next))
            self.credited = self.received
            if self.next == self.n and not self.done.done():
                self.done.set_result(None)


class CsockReceiver(csock.aio.BatchDatagramProtocol):
    def __init__(self, state: Receiver) -> None:
        self.state = state

    def datagrams_received(self, datagrams: list[Any]) -> None:
        state = self.state
        state.last = time.perf_counter()
        if not state.first:
            state.first = state.last
        unpack = SEQ.unpack_from
        following = state.next
        for d in datagrams:  # the user touches every datagram
            (seq,) = unpack(d.data)
            if seq < following:
                raise DataMismatch(f"sequence: expected at least {following}, got {seq}")
            following = seq + 1
        state.next = following
        state.received += len(datagrams)
        state.credit_if_due()

    def error_received(self, exc: OSError) -> None:  # the sender has gone: ECONNREFUSED
        pass


class StdlibReceiver(asyncio.DatagramProtocol):
    # error_received: asyncio's default ignores it (ECONNREFUSED once the sender has gone)
    def __init__(self, state: Receiver) -> None:
        self.state = state

    def datagram_received(self, data: bytes, addr: Any) -> None:
        state = self.state
        state.last = time.perf_counter()
        if not state.first:
            state.first = state.last
        (seq,) = SEQ.unpack_from(data)
        if seq < state.next:
            raise DataMismatch(f"sequence: expected at least {state.next}, got {seq}")
        state.next = seq + 1
        state.received += 1
        state.credit_if_due()


async def udp_receiver(library: str, sock: Any, n: int, offload: bool = True) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    state = Receiver(n, done)
    failure: list[BaseException] = []

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        failure.append(context.get("exception") or RuntimeError(context["message"]))
        if not done.done():
            done.set_result(None)

    loop.set_exception_handler(on_error)  # a DataMismatch raised in a protocol callback
    transport: Any
    if library == "csock":
        transport, _ = await csock.aio.create_datagram_endpoint(
            lambda: CsockReceiver(state),
            sock=sock,
            max_messages=BATCH,
            bufsize=SEQ.size + 56,
            offload=offload,
        )
    else:
        transport, _ = await loop.create_datagram_endpoint(lambda: StdlibReceiver(state), sock=sock)
    state.send = transport.sendto
    started = time.monotonic()
    while not done.done():
        await asyncio.wait([done], timeout=SILENCE / 4)
        now = time.perf_counter()
        if state.received and now - state.last > SILENCE:
            break  # silence: the rest was lost
        if not state.received and time.monotonic() - started > 60:
            raise DataMismatch("nothing arrived in 60 s")
    transport.abort()
    if failure:
        if isinstance(failure[0], DataMismatch):
            raise failure[0]
        raise RuntimeError(f"the receiving endpoint failed: {failure[0]!r}")
    if not state.received:
        raise DataMismatch("nothing arrived")
    return state.last - state.first, state.received


class Sender(asyncio.DatagramProtocol):
    """The sending side: takes credits, pauses while the transport's buffer is full."""

    def __init__(self) -> None:
        self.credit = 0
        self.news = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.take(data)

    def datagrams_received(self, datagrams: list[Any]) -> None:
        for d in datagrams:
            self.take(d.data)

    def take(self, data: Any) -> None:
        if len(data) == 8:
            self.credit = max(self.credit, SEQ.unpack_from(data)[0])
            self.news.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def udp_sender(library: str, sock: Any, n: int, offload: bool = True) -> float:
    loop = asyncio.get_running_loop()
    messages = datagrams(n)
    window = credit_window(sock)
    protocol = Sender()
    transport: Any
    if library == "csock":
        transport, _ = await csock.aio.create_datagram_endpoint(
            lambda: protocol, sock=sock, max_messages=64, bufsize=64, offload=offload
        )

        def send(first: int, count: int) -> None:
            transport.send_batch(messages[first : first + count])
    else:
        transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        sendto = transport.sendto

        def send(first: int, count: int) -> None:
            for m in messages[first : first + count]:
                sendto(m)

    start = time.perf_counter()
    sent = 0
    while sent < n:
        await protocol.writable.wait()
        allowed = protocol.credit + window - sent
        if allowed <= 0:
            protocol.news.clear()
            try:
                await asyncio.wait_for(protocol.news.wait(), SILENCE)
            except asyncio.TimeoutError:
                protocol.credit = sent  # silence: what is in flight was lost
            continue
        k = min(allowed, BATCH if library == "csock" else CREDIT_EVERY, n - sent)
        send(sent, k)
        sent += k
        await asyncio.sleep(0)  # let credits in
    elapsed = time.perf_counter() - start
    transport.close()  # after the buffer is sent
    await protocol.closed
    return elapsed


def udp_server(module: Any, n: int, impl: str, fd: int) -> tuple[float, int]:
    library, loop = flavour(impl)
    sock = module.socket(fileno=fd)
    result: tuple[float, int] = run_on(loop, udp_receiver(library, sock, n, impl != "csock-plain"))
    return result


def udp_client(module: Any, n: int, impl: str, fd: int) -> float:
    library, loop = flavour(impl)
    sock = module.socket(fileno=fd)
    elapsed: float = run_on(loop, udp_sender(library, sock, n, impl != "csock-plain"))
    return elapsed


def main(workload: str, transport: str, impl: str, role: str, n: int, where: str) -> int:
    """The worker's entry for the asyncio workloads: prints the result line; 1 on a mismatch."""
    try:
        if transport == "tcp-many":
            outcome = echo_side(workload, impl, role, n, int(where))
            elapsed, received = outcome if outcome is not None else (0.0, n)
        elif role == "server":
            module = csock if flavour(impl)[0] == "csock" else stdlib
            elapsed, received = udp_server(module, n, impl, int(where))
        else:
            module = csock if flavour(impl)[0] == "csock" else stdlib
            elapsed, received = udp_client(module, n, impl, int(where)), n
    except DataMismatch as error:
        print(f"DATA MISMATCH in {workload}/{impl} ({role}): {error}", file=sys.stderr)
        return 1
    print(json.dumps({"elapsed": elapsed, "count": n, "received": received}), flush=True)
    return 0
