"""The asyncio workloads of ``python -m csock bench``: csock.aio against asyncio's own streams
and datagram endpoints, on the default loop and on uvloop.

Implementations: ``csock`` (csock.aio on uvloop; its datagram endpoint's default
``offload=True``: UDP GSO and GRO), ``csock-plain`` (aio-udp only: the same with
``offload=False``, plain sendmmsg/recvmmsg), ``csock-asyncio`` (csock.aio on the default
loop), ``uvloop`` and ``asyncio`` (the loop's own streams or ``loop.create_datagram_endpoint``),
``csock-xK`` (csock.aio on uvloop, the server in K processes sharing one port), and
``csock-uring`` / ``csock-epoll`` (csock.aio on uvloop, the server or receiving endpoint with
``engine="uring"`` / ``engine="epoll"``). Every csock row's client (or sender) is the same
program, csock.aio on uvloop with the default engine, and so is the client that drives the
C server (``c``: bench/c/uring_echo.c): between those rows only the server differs.

Echo workloads (transport "tcp-many"): framed echo (4-byte big-endian length, messages of 64
bytes, 64 KiB for aio-bulk-1, starting with the connection number and a sequence number).
The server binds 127.0.0.1:PORT with SO_REUSEPORT, prints "ready", echoes until its stdin
closes. Each workload's SHAPE says how the client drives it:

- connections kept open (aio-echo, aio-echo-pingpong, aio-scale, aio-reqresp-1k,
  aio-pingpong-1, aio-stream-1, aio-bulk-1): the client opens CONNECTIONS connections and,
  before its clock starts, has one message (sequence 0) echoed on each: every connection is
  then accepted and served, so the timed window holds the echoes and nothing else. The N
  timed messages are shared out over the connections; each sends its share in bursts (all
  sent, then every echo read; a burst of 1 is ping-pong: one message in flight per
  connection) and checks every echo (length, connection, sequence). The clock stops at the
  last echo.
- connections opened inside the window (aio-echo-1k): the clock starts before the first
  connect; CONNECTIONS tasks each open a connection, send its PER_CONNECTION messages at once,
  read and check every echo, close it and open the next, until the N messages are echoed.
  Connecting and accepting are part of what is measured.

Around its timed window the client reads the server processes' CPU time (user + system, from
/proc/<pid>/stat; the runner names the pids in BENCH_SERVER_PIDS), and reports the difference:
the server CPU time the echoes cost.

(The figure once published, 9.61x uvloop, came from 27 ms windows: 200 fresh connections of
100 messages, all in flight at once, the clock started once the client's connects returned,
whether or not the server had accepted. Windows that short swing widely: see CHANGELOG.md,
Benchmark history.)
"""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket as stdlib
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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
SERVER_PIDS = "BENCH_SERVER_PIDS"  # the runner names the server processes here (comma-separated)
ENGINES = {"csock-uring": "uring", "csock-epoll": "epoll"}


@dataclass(frozen=True)
class Shape:
    """How an echo workload's client drives the server."""
    connections: int = CONNECTIONS     # open at once
    burst: int = BURST                 # sent before their echoes are read (1: ping-pong)
    per_connection: int = 0            # > 0: messages per connection, connections opened in window
    size: int = SIZE                   # bytes per message


SHAPES = {
    "aio-echo": Shape(),
    "aio-scale": Shape(),
    "aio-echo-pingpong": Shape(burst=1),
    "aio-echo-1k": Shape(1000, 100, per_connection=100),
    "aio-reqresp-1k": Shape(1000, burst=1),
    "aio-pingpong-1": Shape(1, burst=1),
    "aio-stream-1": Shape(1),
    "aio-bulk-1": Shape(1, burst=16, size=64 * 1024),
}


def flavour(impl: str) -> tuple[str, str]:
    """(library, loop) of an implementation: library "csock" or "stdlib", loop "uvloop" or
    "asyncio". The C rows ("c", "c-...") name the client that drives the C server."""
    if impl in ("csock", "csock-plain", "c", *ENGINES) or impl.startswith(("csock-x", "c-")):
        return "csock", "uvloop"
    if impl == "csock-asyncio":
        return "csock", "asyncio"
    if impl in ("uvloop", "asyncio"):
        return "stdlib", impl
    raise ValueError(f"unknown asyncio implementation {impl!r}")


def engine_of(impl: str) -> str | None:
    """The engine an implementation's server or receiving endpoint asks for; None: the default
    (no ``engine`` keyword passed, as a user who names none)."""
    return ENGINES.get(impl)


def engine_keyword_supported(datagram: bool = False) -> bool:
    """Whether this csock.aio takes ``engine=`` (issue 18's io_uring engine is there): on the
    framed server and connection, or (datagram) on create_datagram_endpoint."""
    calls = ((csock.aio.create_datagram_endpoint,) if datagram else
             (csock.aio.start_framed_server, csock.aio.open_framed_connection))
    return all("engine" in inspect.signature(call).parameters for call in calls)


def engine_keywords(impl: str) -> dict[str, Any]:
    engine = engine_of(impl)
    return {} if engine is None else {"engine": engine}


def server_cpu() -> float | None:
    """User + system seconds the server processes named in BENCH_SERVER_PIDS have used so far
    (utime + stime of /proc/<pid>/stat, whole process, in clock ticks of 1/SC_CLK_TCK s);
    None when the runner named none."""
    pids = os.environ.get(SERVER_PIDS)
    if not pids:
        return None
    ticks = 0
    for pid in pids.split(","):
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after "(comm)", which may hold spaces
        ticks += int(fields[11]) + int(fields[12])        # fields 14 and 15: utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_used(before: float | None) -> float | None:
    after = server_cpu()
    return None if before is None or after is None else after - before


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


def split(n: int, connections: int = CONNECTIONS) -> list[int]:
    """Timed messages per connection: n shared out over `connections` connections (n of one
    message each when n is smaller)."""
    connections = max(1, min(n, connections))
    share, extra = divmod(n, connections)
    return [share + (conn < extra) for conn in range(connections)]


def per_connection(n: int, size: int) -> list[int]:
    """Messages of each connection opened in the window: `size` each, the last the rest."""
    full, rest = divmod(n, size)
    return [size] * full + ([rest] if rest else [])


def bursts(items: list[Any], size: int = BURST) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def messages_for(conn: int, count: int, size: int = SIZE) -> list[bytes]:
    filler = b"e" * (size - ECHO.size)
    return [ECHO.pack(conn, seq) + filler for seq in range(count)]


def check(conn: int, seq: int, message: Any, size: int = SIZE) -> None:
    if len(message) != size:
        raise DataMismatch(f"connection {conn}: echo {seq} has {len(message)} bytes, not {size}")
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


async def echo_server(library: str, port: int, engine: dict[str, Any]) -> None:
    """Serve 127.0.0.1:port (SO_REUSEPORT: other processes may serve it too) until stdin closes;
    `engine` holds csock.aio's engine keyword, if one is named."""
    loop = asyncio.get_running_loop()
    server: Any
    if library == "csock":
        server = await csock.aio.start_framed_server(csock_echo, "127.0.0.1", port, reuse_port=True,
                                                     backlog=4096, **engine)
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


async def timed_echoes(worker: Callable[[int], Any], workers: int) -> Timed:
    """(elapsed, echoes, server CPU used) of worker(0..workers-1) run at once, timed from
    before the first starts to after the last ends."""
    cpu = server_cpu()
    start = time.perf_counter()
    echoed = await asyncio.gather(*(worker(k) for k in range(workers)))
    elapsed = time.perf_counter() - start
    return elapsed, sum(echoed), cpu_used(cpu)


# --- framed echo: clients ---------------------------------------------------------------------
# Each returns (elapsed, echoes checked, server CPU seconds over the window or None).

Timed = tuple[float, int, "float | None"]


async def csock_echoes(conn: int, stream: csock.aio.FramedStream, parts: list[list[bytes]],
                       first: int) -> int:
    """Send each burst of messages (sequence numbers from `first`; split before the clock),
    then check every echo; their count. Bursts of one message are ping-pong."""
    seq = first
    size = len(parts[0][0]) if parts else SIZE
    if all(len(part) == 1 for part in parts):
        for (message,) in parts:
            await stream.send(message)
            check(conn, seq, await stream.recv(), size)
            seq += 1
        return seq - first
    for part in parts:
        await stream.send_many(part)
        end = seq + len(part)
        while seq < end:
            batch = await stream.recv_many()
            if not batch:
                raise DataMismatch(f"connection {conn}: end of stream after {seq} echoes")
            for echo in batch:
                check(conn, seq, echo, size)
                seq += 1
    return seq - first


async def csock_clients(port: int, counts: list[int], shape: Shape) -> Timed:
    streams = await asyncio.gather(*(csock.aio.open_framed_connection("127.0.0.1", port)
                                     for _ in counts))
    outgoing = [messages_for(conn, count + 1, shape.size) for conn, count in enumerate(counts)]
    timed = [bursts(mine[1:], shape.burst) for mine in outgoing]

    async def warm_up(conn: int, stream: csock.aio.FramedStream) -> None:
        await stream.send(outgoing[conn][0])
        check(conn, 0, await stream.recv(), shape.size)

    await asyncio.gather(*(warm_up(k, s) for k, s in enumerate(streams)))
    cpu = server_cpu()
    start = time.perf_counter()
    echoed = await asyncio.gather(*(csock_echoes(k, s, timed[k], 1)
                                    for k, s in enumerate(streams)))
    elapsed = time.perf_counter() - start
    used = cpu_used(cpu)
    for s in streams:
        s.close()
    await asyncio.gather(*(s.wait_closed() for s in streams))
    return elapsed, sum(echoed), used


async def csock_churn(port: int, plan: list[int], shape: Shape) -> Timed:
    """Connections opened inside the window: shape.connections tasks, each opening the next
    connection of the plan (its message count) when the last is echoed and closed."""
    outgoing = [bursts(messages_for(conn, count, shape.size), shape.burst)
                for conn, count in enumerate(plan)]

    async def worker(first: int) -> int:
        echoed = 0
        for conn in range(first, len(plan), shape.connections):
            stream = await csock.aio.open_framed_connection("127.0.0.1", port)
            echoed += await csock_echoes(conn, stream, outgoing[conn], 0)
            stream.close()
            await stream.wait_closed()
        return echoed

    return await timed_echoes(worker, min(shape.connections, len(plan)))


async def streams_echoes(conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         joined: list[tuple[bytes, int]], first: int, size: int) -> int:
    """The streams version of csock_echoes: each burst's frames joined (before the clock) and
    written at once, then every echo read and checked."""
    seq = first
    for data, count in joined:
        writer.write(data)
        await writer.drain()
        for _ in range(count):
            length = FRAME.unpack(await reader.readexactly(4))[0]
            check(conn, seq, await reader.readexactly(length), size)
            seq += 1
    return seq - first


def frames_for(conn: int, first: int, count: int, shape: Shape) -> list[tuple[bytes, int]]:
    """Messages first..count-1 of a connection as frames, joined burst by burst."""
    header = FRAME.pack(shape.size)
    frames = [header + m for m in messages_for(conn, count, shape.size)[first:]]
    return [(b"".join(part), len(part)) for part in bursts(frames, shape.burst)]


async def streams_clients(port: int, counts: list[int], shape: Shape) -> Timed:
    pairs = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in counts))
    warm = [frames_for(conn, 0, 1, shape) for conn in range(len(counts))]
    timed = [frames_for(conn, 1, count + 1, shape) for conn, count in enumerate(counts)]

    async def warm_up(
        conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await streams_echoes(conn, reader, writer, warm[conn], 0, shape.size)

    await asyncio.gather(*(warm_up(k, r, w) for k, (r, w) in enumerate(pairs)))
    cpu = server_cpu()
    start = time.perf_counter()
    echoed = await asyncio.gather(*(streams_echoes(k, r, w, timed[k], 1, shape.size)
                                    for k, (r, w) in enumerate(pairs)))
    elapsed = time.perf_counter() - start
    used = cpu_used(cpu)
    for _, w in pairs:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in pairs), return_exceptions=True)
    return elapsed, sum(echoed), used


async def streams_churn(port: int, plan: list[int], shape: Shape) -> Timed:
    outgoing = [frames_for(conn, 0, count, shape) for conn, count in enumerate(plan)]

    async def worker(first: int) -> int:
        echoed = 0
        for conn in range(first, len(plan), shape.connections):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            echoed += await streams_echoes(conn, reader, writer, outgoing[conn], 0, shape.size)
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
        return echoed

    return await timed_echoes(worker, min(shape.connections, len(plan)))


def echo_side(workload: str, impl: str, role: str, n: int, port: int) -> Timed | None:
    """One side of a framed echo run; the client returns (elapsed, echoes checked, server CPU
    seconds), the server None (it prints "ready" once listening and serves until its stdin
    closes)."""
    library, loop = flavour(impl)
    shape = SHAPES[workload]
    if role == "server":
        run_on(loop, echo_server(library, port, engine_keywords(impl)))
        return None
    result: Timed
    if shape.per_connection:
        churn = csock_churn if library == "csock" else streams_churn
        result = run_on(loop, churn(port, per_connection(n, shape.per_connection), shape))
    else:
        clients = csock_clients if library == "csock" else streams_clients
        result = run_on(loop, clients(port, split(n, shape.connections), shape))
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


async def udp_receiver(library: str, sock: Any, n: int, offload: bool = True,
                       engine: dict[str, Any] | None = None) -> tuple[float, int]:
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
            **(engine or {}),
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
    result: tuple[float, int] = run_on(
        loop, udp_receiver(library, sock, n, impl != "csock-plain", engine_keywords(impl)))
    return result


def udp_client(module: Any, n: int, impl: str, fd: int) -> float:
    library, loop = flavour(impl)
    sock = module.socket(fileno=fd)
    elapsed: float = run_on(loop, udp_sender(library, sock, n, impl != "csock-plain"))
    return elapsed


def raise_file_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: 1,000 connections and more need more than the
    1,024 descriptors many systems start a process with."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(workload: str, transport: str, impl: str, role: str, n: int, where: str) -> int:
    """The worker's entry for the asyncio workloads: prints the result line; 1 on a mismatch."""
    raise_file_limit()
    try:
        if transport == "tcp-many":
            outcome = echo_side(workload, impl, role, n, int(where))
            elapsed, received, cpu = outcome if outcome is not None else (0.0, n, None)
            if cpu is not None:
                result = {"elapsed": elapsed, "count": n, "received": received, "server_cpu": cpu}
                print(json.dumps(result), flush=True)
                return 0
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
