"""csock.uring over a real io_uring and real sockets: bytes, counts, order and addresses of
what the ring sends and receives; views that keep their buffer; cancel; close() from another
thread; fork; no fd or memory growth over 10,000 operations."""
from __future__ import annotations

import errno
import gc
import mmap
import os
import select
import signal
import socket as stdlib_socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import csock

from .children import script_output
from .pairs import IPV6_FIELDS, STREAM_FAMILIES, outcome, recv_all, stream_pair, udp_pair

uring = pytest.importorskip("csock.uring")
if not uring.available():
    pytest.skip("io_uring is unavailable here (kernel, seccomp or io_uring_disabled)",
                allow_module_level=True)


@pytest.fixture
def ring() -> Iterator[uring.Ring]:
    with uring.Ring(64, 32, 4096) as r:
        yield r
        assert r.pending == 0 or r.closed


@pytest.fixture(scope="module", autouse=True)
def close_default_ring() -> Iterator[None]:
    yield
    uring.default_ring().close()


def needs(r: uring.Ring, *ops: str) -> None:
    missing = set(ops) - r.supported_ops()
    if missing:
        pytest.skip(f"this kernel has no io_uring {', '.join(sorted(missing))}")


def drained(r: uring.Ring, sock: csock.socket) -> list[uring.ReceivedView]:
    """The views of every datagram queued on sock, received with one recvmsg(drain=True)."""
    request = r.recvmsg(sock, drain=True)
    done: list[uring.Completion] = []
    while not request.done:
        done += r.wait(1, timeout=2)
    return [c.value[0] for c in done if c.value is not None]


def udp_socket() -> csock.socket:
    s = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def refused_udp_socket() -> csock.socket:
    """A UDP socket connected to a port nobody holds any more (see refuse)."""
    sock, gone = udp_socket(), udp_socket()
    sock.connect(gone.getsockname())
    gone.close()
    return sock


def refuse(sock: csock.socket) -> None:
    """A send from refused_udp_socket() draws an ICMP port unreachable: the socket's next
    call reports it (ECONNREFUSED)."""
    sock.send(b"to a closed port")
    time.sleep(0.02)


def stream_bytes(r: uring.Ring, count: int, timeout: float = 5.0) -> tuple[bytes, list]:
    """Wait for completions until count bytes (or end of stream) came; the bytes and the
    completions (views released: copied)."""
    got = bytearray()
    completions = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for c in r.wait(1, timeout=0.5):
            completions.append(c)
            if c.error is None and c.value is not None:
                got += bytes(c.value)
            if c.value == b"":
                return bytes(got), completions
    return bytes(got), completions


def test_ring_reports_what_the_kernel_has() -> None:
    with uring.Ring(8, 0) as r:
        assert r.fileno >= 0
        assert "send" in r.supported_ops()
        assert "recv" not in r.supported_ops()         # no buffers: no receives
        with pytest.raises(OSError) as caught:
            a, b = csock.socketpair()
            try:
                r.recv(a)
            finally:
                a.close()
                b.close()
        assert caught.value.errno == errno.ENOSYS
    assert r.closed
    assert "ext_arg" in uring.kernel_features() or "nodrop" in uring.kernel_features()


@pytest.mark.parametrize("kind", STREAM_FAMILIES)
def test_multishot_recv_keeps_bytes_in_order_until_end_of_stream(ring, kind) -> None:
    needs(ring, "recv")
    payload = b"".join(struct.pack("!I", i) * 16 for i in range(500))      # 32000 bytes
    with stream_pair(kind) as (a, b):
        request = ring.recv(a)
        assert request.multishot and not request.done and request.op == "recv"
        sender = threading.Thread(target=lambda: (b.sendall(payload), b.shutdown(csock.SHUT_WR)))
        sender.start()
        got, completions = stream_bytes(ring, len(payload) + 1)
        sender.join()
        if completions[-1].value != b"":
            completions += ring.wait(1, timeout=2)
        assert got == payload
        assert completions[-1].value == b"" and not completions[-1].more
        assert all(c.more for c in completions[:-1])
        assert request.done
        del completions                             # the views they hold give buffers back
        assert ring.pool.outstanding == 0


def test_completions_beyond_the_cq_are_neither_lost_nor_reordered() -> None:
    with uring.Ring(2, 256, 64) as r:                    # a CQ of 4 entries
        needs(r, "recv")
        a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
        with a, b:
            r.recv(a)
            r.submit()
            for i in range(100):                         # 100 completions, none reaped
                b.send(b"%03d" % i)
            got = []
            while len(got) < 100:
                got += [bytes(c.value) for c in r.wait(1, timeout=2)]
            assert got == [b"%03d" % i for i in range(100)]
            a.close()
            assert r.wait(0, timeout=0)[0].error.errno == errno.ECANCELED
            assert r.pending == 0


def test_view_keeps_its_buffer_until_released(ring) -> None:
    needs(ring, "recv")
    a, b = csock.socketpair()
    with a, b:
        ring.recv(a)
        b.send(b"first")
        (first,) = ring.wait(1, timeout=2)
        view = first.value
        mv = memoryview(view)
        for i in range(100):                    # every other buffer is filled meanwhile
            b.send(b"%05d" % i)
            assert [bytes(c.value) for c in ring.wait(1, timeout=2)] == [b"%05d" % i]
        assert bytes(view) == b"first" and mv.tobytes() == b"first" and mv.readonly
        assert view == b"first" and len(view) == 5
        assert ring.pool.outstanding == 1
        del first, view
        assert ring.pool.outstanding == 1       # the memoryview still holds the buffer
        mv.release()
        assert ring.pool.outstanding == 0
        assert ring.cancel_socket(a) == 1
        (end,) = ring.wait(1, timeout=2)
        assert end.error.errno == errno.ECANCELED


def test_held_views_exhaust_the_pool_without_losing_bytes() -> None:
    with uring.Ring(16, 2, 64) as r:
        needs(r, "recv")
        a, b = csock.socketpair()
        with a, b:
            r.recv(a)
            held = []
            for chunk in (b"one", b"two"):
                b.send(chunk)
                held += [c.value for c in r.wait(1, timeout=2)]
            b.send(b"three")                     # no free buffer: the multishot ends
            (end,) = r.wait(1, timeout=2)
            assert end.error.errno == errno.ENOBUFS and not end.more
            assert [bytes(v) for v in held] == [b"one", b"two"]
            held.clear()                         # buffers back: re-arm, nothing was lost
            r.recv(a)
            (again,) = r.wait(1, timeout=2)
            assert bytes(again.value) == b"three"
            del again
            r.cancel_socket(a)
            r.wait(1, timeout=2)



def test_released_buffers_are_filled_again_first() -> None:
    """The kernel is offered the buffers given back last (still in the CPU's cache), not
    each of the ring's buffers in turn: 500 receives, each view released at once, use no
    more buffers than are offered at a time (and one more)."""
    with uring.Ring(16, 256, 65536) as r:
        needs(r, "recv")
        a, b = csock.socketpair()
        with a, b:
            r.recv(a)
            used = set()
            for i in range(500):
                b.send(b"%d" % i)
                (c,) = r.wait(1, timeout=2)
                assert bytes(c.value) == b"%d" % i
                used.add(c.value.buffer_id)
                del c
            assert len(used) <= r.pool.offered + 1 < r.pool.count // 2
            r.cancel_socket(a)
            r.wait(1, timeout=2)


def test_a_receive_that_finds_no_buffer_doubles_the_buffers_offered() -> None:
    """Datagrams queued before the receive is armed take a buffer each, all before the first
    reap: past the buffers offered, ENOBUFS ends the receive (the rest wait in the socket),
    and twice as many are offered from then on."""
    with uring.Ring(16, 256, 65536) as r:
        needs(r, "recvmsg")
        offered = r.pool.offered
        rx, tx = udp_socket(), udp_socket()
        with rx, tx:
            for i in range(offered + 8):
                tx.sendto(b"%d" % i, rx.getsockname())
            r.recvmsg(rx)
            first = r.wait(offered + 1, timeout=2)
            assert [bytes(c.value[0]) for c in first[:-1]] == [b"%d" % i for i in range(offered)]
            assert first[-1].error.errno == errno.ENOBUFS and not first[-1].more
            assert r.pool.offered == 2 * offered
            r.recvmsg(rx, drain=True)           # no view went back: the new ones take the rest
            rest = r.wait(9, timeout=2)
            assert [bytes(c.value[0]) for c in rest[:8]] == [b"%d" % i
                                                             for i in range(offered, offered + 8)]
            del first, rest


def test_the_pool_maps_its_buffers_a_chunk_at_a_time_as_they_are_used() -> None:
    """A loop's ring has 4,096 buffers of 32 KiB: mapped whole, 128 MiB of address space a
    loop. A chunk of them is mapped when the first of its buffers is offered, and datagrams
    held in views across the chunks' seams arrive whole and in order."""
    with uring.Ring(16, 4096, 32768) as r:
        needs(r, "recvmsg")
        chunk = r.pool.offered
        assert r.pool.mapped == chunk < r.pool.count
        rx, tx = udp_socket(), udp_socket()
        with rx, tx:
            payloads = [bytes([i % 256]) * (100 + i) for i in range(2 * chunk + 8)]
            for payload in payloads:
                tx.sendto(payload, rx.getsockname())
            views = drained(r, rx)
            assert [bytes(v) for v in views] == payloads
            last = max(v.buffer_id for v in views)
            assert last >= 2 * chunk
            # The chunks of the buffers used, and of those offered after them (in the ring).
            assert last < r.pool.mapped <= (last // chunk + 1) * chunk + r.pool.offered
            assert r.pool.mapped < r.pool.count // 8
            del views


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.booleans()), min_size=60, max_size=120))
def test_views_held_across_chunks_keep_their_bytes_while_buffers_are_reused(
        sends: list[tuple[int, bool]]) -> None:
    """Datagrams of any size up to a buffer, each view kept or released at once: every kept
    view still holds its own bytes after the rest were received into buffers given back and
    reused, in whichever chunk (16 buffers of 128 KiB a chunk, the first offer, of 4)."""
    with uring.Ring(16, 64, 128 * 1024) as r:
        needs(r, "recvmsg")
        rx, tx = udp_socket(), udp_socket()
        kept: list[tuple[uring.ReceivedView, bytes]] = []
        with rx, tx:
            for i, (size, keep) in enumerate(sends):
                payload = bytes([i % 251]) * size
                tx.sendto(payload, rx.getsockname())
                views = drained(r, rx)
                if not views:                   # every buffer is held: it waits in the socket
                    assert len(kept) >= r.pool.offered - 1
                    break
                (view,) = views
                assert bytes(view) == payload
                if keep and len(kept) < 40:
                    kept.append((view, payload))
                del views, view
            assert [bytes(view) for view, _ in kept] == [payload for _, payload in kept]
            assert r.pool.outstanding == len(kept)
            assert r.pool.offered == 16 and r.pool.mapped <= r.pool.count
            del kept
        assert r.pool.outstanding == 0


def test_many_receives_without_a_buffer_in_one_reap_double_the_offer_once() -> None:
    """Eight receives more than buffers offered, each ending with ENOBUFS in one reap, double
    the offer once: a doubling per such receive had offered every buffer after one burst of
    connections, and the kernel then wrote each in turn (every one of them resident)."""
    with uring.Ring(64, 256, 65536) as r:
        needs(r, "recvmsg")
        offered = r.pool.offered
        sockets = [udp_socket() for _ in range(offered + 8)]
        tx = udp_socket()
        try:
            for i, rx in enumerate(sockets):
                tx.sendto(b"%d" % i, rx.getsockname())
            for rx in sockets:
                r.recvmsg(rx)
            done = r.wait(offered + 8, timeout=2)
            got = {sockets.index(c.request.sock): bytes(c.value[0])
                   for c in done if c.error is None}
            assert got == {i: b"%d" % i for i in range(offered)}    # each its own datagram
            # (The last receive to get a buffer ends with ENOBUFS too, when it tries again.)
            assert {sockets.index(c.request.sock) for c in done if c.error is not None} >= set(
                range(offered, offered + 8))
            assert {c.error.errno for c in done if c.error is not None} == {errno.ENOBUFS}
            assert r.pool.offered == 2 * offered < r.pool.count
            del done
        finally:
            r.close()
            for sock in [*sockets, tx]:
                sock.close()


def test_a_multishot_recv_takes_at_most_its_limit_between_reaps() -> None:
    """A peer that keeps sending gets no more than recv_limit bytes into the ring's buffers
    before the application reaps (without the limit it got every buffer offered): the kernel
    ends the multishot recv there and the reap arms it again, losing nothing."""
    with uring.Ring(16, 256, 16384) as r:
        needs(r, "recv")
        if not r.recv_limit:
            pytest.skip("this kernel takes no byte limit for a multishot recv")
        payload = bytes(range(256)) * 16384                 # 4 MiB
        a, b = csock.socketpair()
        with a, b:
            sender = threading.Thread(target=b.sendall, args=(payload,))
            sender.start()
            r.recv(a)
            r.submit()
            time.sleep(0.3)                                   # the kernel receives meanwhile
            first = r.wait(1, timeout=2)
            assert sum(c.result for c in first) <= r.recv_limit + r.pool.buffer_size
            assert all(c.error is None and c.more for c in first)
            got = b"".join(bytes(c.value) for c in first)
            del first
            rest, completions = stream_bytes(r, len(payload) - len(got))
            assert all(c.error is None for c in completions)
            assert got + rest == payload
            sender.join()
            r.cancel_socket(a)
            r.wait(1, timeout=2)


def test_run_callbacks_calls_each_requests_callback_in_order(ring) -> None:
    needs(ring, "recv", "send")
    a, b = csock.socketpair()
    with a, b:
        calls: list[tuple[str, object]] = []
        errors: list[tuple[object, Exception]] = []

        def receive(c: uring.Completion) -> None:
            calls.append(("recv", bytes(c.value) if c.error is None else c.error.errno))

        def fail(c: uring.Completion) -> None:
            calls.append(("send", c.value))
            raise RuntimeError("a handler's bug")

        receiving = ring.recv(a)
        receiving.callback = receive
        ring.send(b, b"first").callback = fail
        ring.send(b, b"unwatched")                   # no callback: its completion is dropped
        def received() -> bytes:
            return b"".join(v for k, v in calls if k == "recv" and isinstance(v, bytes))

        deadline = time.monotonic() + 5
        while len(received()) < 14 and time.monotonic() < deadline:
            ring.run_callbacks(lambda callback, error: errors.append((callback, error)))
        # Both sends may go out before the receive runs: one arrival can carry both.
        assert ("send", 5) in calls and received() == b"firstunwatched"
        assert [(cb, str(e)) for cb, e in errors] == [(fail, "a handler's bug")]
        assert receiving.callback is receive         # multishot: still armed
        ring.cancel(receiving)
        while not receiving.done and time.monotonic() < deadline:
            ring.run_callbacks(lambda callback, error: errors.append((callback, error)))
        assert calls[-1] == ("recv", errno.ECANCELED) and receiving.callback is None
        assert len(errors) == 1 and ring.pending == 0


def test_run_callbacks_takes_the_handlers_from_a_dict_when_given(ring) -> None:
    # csock.aio keeps its handlers out of the requests (a request holding a stream's handler
    # kept the stream's loop alive for ever): the dict is asked, and a request's entry goes
    # with its last completion; request.callback is then not used.
    needs(ring, "recv", "send")
    a, b = csock.socketpair()
    with a, b:
        calls: list[tuple[str, object]] = []

        class Handlers(dict):                       # (a subclass is taken too)
            pass

        handlers = Handlers()
        receiving = ring.recv(a)
        receiving.callback = lambda c: calls.append(("callback", c))
        handlers[receiving] = lambda c: calls.append(
            ("recv", bytes(c.value) if c.error is None else c.error.errno))
        sending = ring.send(b, b"hello")
        handlers[sending] = lambda c: calls.append(("send", c.value))
        deadline = time.monotonic() + 5
        while ("recv", b"hello") not in calls and time.monotonic() < deadline:
            ring.run_callbacks(lambda callback, error: pytest.fail(repr(error)), handlers)
        assert ("send", 5) in calls and ("recv", b"hello") in calls
        assert list(handlers) == [receiving]         # multishot: still armed
        ring.cancel(receiving)
        while not receiving.done and time.monotonic() < deadline:
            ring.run_callbacks(lambda callback, error: pytest.fail(repr(error)), handlers)
        assert calls[-1] == ("recv", errno.ECANCELED) and handlers == {}
        assert not any(name == "callback" for name, _ in calls)
        with pytest.raises(TypeError):
            ring.run_callbacks(lambda callback, error: None, [])


def polls_ready_at_once(r: uring.Ring, sock: object, count: int,
                        callback: object) -> list[uring.Request]:
    """count one-shot POLLOUT requests on a writable socket, each completing at the submit."""
    requests = []
    for _ in range(count):
        request = r.poll(sock, select.POLLOUT)
        request.callback = callback
        requests.append(request)
    return requests


def test_run_callbacks_frees_each_completion_before_making_the_next() -> None:
    """1,000 completions posted at once, their callbacks keeping nothing: the cyclic GC's
    youngest generation (700 objects) never fills during the call. It ran in the middle of
    every such batch when all its completions were made before the first callback ran."""
    with uring.Ring(1024, 0) as r:
        needs(r, "poll")
        tx = udp_socket()
        collections: list[int] = []

        def count_collections(phase: str, info: dict) -> None:
            if phase == "start":
                collections.append(info["generation"])

        thresholds = gc.get_threshold()
        calls = []
        requests = polls_ready_at_once(r, tx, 1000, lambda c: calls.append(c.result))
        gc.set_threshold(700, 10, 10)
        gc.collect()
        gc.callbacks.append(count_collections)
        try:
            ran = r.run_callbacks(lambda callback, error: None)
        finally:
            gc.callbacks.remove(count_collections)
            gc.set_threshold(*thresholds)
            tx.close()
        assert ran == 1000 and len(calls) == 1000 and all(c & select.POLLOUT for c in calls)
        assert collections == []
        assert all(request.done for request in requests) and r.pending == 0


def test_completions_after_a_callback_raises_ctrl_c_run_at_the_next_call() -> None:
    with uring.Ring(64, 0) as r:
        needs(r, "poll")
        tx = udp_socket()
        calls: list[int] = []

        def interrupt(c: uring.Completion) -> None:
            calls.append(len(calls))
            if len(calls) == 2:
                raise KeyboardInterrupt

        with tx:
            polls_ready_at_once(r, tx, 5, interrupt)
            with pytest.raises(KeyboardInterrupt):
                r.run_callbacks(lambda callback, error: None)
            assert calls == [0, 1]
            assert r.run_callbacks(lambda callback, error: None) == 3
            assert calls == [0, 1, 2, 3, 4] and r.pending == 0


def frame(message: bytes) -> bytes:
    return struct.pack("!I", len(message)) + message


def test_a_framed_recv_hands_over_whole_messages_and_keeps_no_buffer() -> None:
    # Two buffers of 64 bytes: were a buffer kept after its bytes were fed, the third
    # arrival would end the multishot with ENOBUFS.
    with uring.Ring(16, 2, 64) as r:
        needs(r, "recv")
        a, b = csock.socketpair()
        with a, b:
            parser = csock._fastio.FramedStream(a, max_size=1000)
            request = r.recv(a, framed=parser)
            wire = frame(b"one") + frame(b"two") + frame(b"three" * 20) + frame(b"four")
            got: list[bytes] = []
            reported = []
            fed = 0
            for piece in (wire[:5], wire[5:16], wire[16:70], wire[70:]):   # split anywhere
                b.send(piece)
                fed += len(piece)
                # A receive that completes no message makes no completion: its bytes count
                # in the next one's result.
                for c in r.wait(1, timeout=0.3):
                    assert c.error is None and c.more and c.result == fed
                    got += [bytes(m) for m in c.value]
                    reported.append(piece)
                    fed = 0
                assert r.pool.outstanding == 0
            assert got == [b"one", b"two", b"three" * 20, b"four"]
            assert reported == [wire[5:16], wire[70:]]
            b.send(frame(b"x" * 1001)[:10])       # a length above max_size
            (too_large,) = r.wait(1, timeout=2)
            assert isinstance(too_large.error, csock.FrameTooLargeError)
            assert too_large.value is None and too_large.more
            r.cancel(request)
            (cancelled,) = r.wait(1, timeout=2)
            assert cancelled.error.errno == errno.ECANCELED and not cancelled.more
        c, d = csock.socketpair()
        with c, d:
            r.recv(c, framed=csock._fastio.FramedStream(c))
            d.send(frame(b"last"))
            d.shutdown(csock.SHUT_WR)
            values = [x.value for x in r.wait(2, timeout=2)]
            assert [[bytes(m) for m in values[0]], values[1]] == [[b"last"], b""]
            with pytest.raises(TypeError, match="FramedStream"):
                r.recv(c, framed=object())
            assert r.pending == 0 and r.pool.outstanding == 0

def arm_into_a_large_frame(r: uring.Ring, a: csock.socket, b: csock.socket,
                           parser: csock._fastio.FramedStream, length: int) -> uring.Request:
    """Send the head of a frame of length bytes, let a one-shot framed recv take it, then arm a
    multishot one: the frame's rest is more than a ring buffer, so it goes into the arena."""
    b.send(struct.pack("!I", length) + b"h" * 100)
    r.recv(a, multishot=False, framed=parser)
    (head,) = r.wait(1, timeout=2)
    assert head.value == [] and head.result == 104 and parser.buffered == 104
    request = r.recv(a, framed=parser)
    r.submit()
    return request


def test_the_rest_of_a_large_frame_is_received_into_the_stream_arena() -> None:
    with uring.Ring(16, 32, 4096) as r:       # 128 KiB of buffers: the frames after the big one
        needs(r, "recv")
        a, b = csock.socketpair()
        with a, b:
            parser = csock._fastio.FramedStream(a)
            big = b"h" * 100 + bytes(range(256)) * 4096         # 1 MiB + 100
            request = arm_into_a_large_frame(r, a, b, parser, len(big))
            # The kernel receives into the arena: the stream's own receives would put their
            # bytes where the kernel is putting later ones.
            for call in (lambda: parser.feed(b"x"), parser.recv, parser.feed_eof):
                with pytest.raises(RuntimeError, match="io_uring recv"):
                    call()
            parser.feed(b"")                # (no bytes: nothing written)
            rest = big[100:] + frame(b"after") + frame(b"x" * 50_000)
            sender = threading.Thread(target=b.sendall, args=(rest,))
            sender.start()
            got: list[bytes] = []
            deadline = time.monotonic() + 10
            while len(got) < 3 and time.monotonic() < deadline:
                for c in r.wait(1, timeout=1):
                    assert c.error is None and c.more
                    got += [bytes(m) for m in c.value]
            sender.join()
            assert got == [big, b"after", b"x" * 50_000]
            assert r.pool.outstanding == 0 and parser.buffered == 0
            parser.feed(b"")
            r.cancel(request)
            assert [c.error.errno for c in r.wait(1, timeout=2)] == [errno.ECANCELED]
            assert r.pending == 0


def test_a_cancelled_receive_into_the_arena_gives_the_stream_back() -> None:
    with uring.Ring(16, 4, 4096) as r:
        needs(r, "recv")
        a, b = csock.socketpair()
        with a, b:
            parser = csock._fastio.FramedStream(a)
            request = arm_into_a_large_frame(r, a, b, parser, 200_000)
            r.cancel(request)
            (cancelled,) = r.wait(1, timeout=2)
            assert cancelled.error.errno == errno.ECANCELED and not cancelled.more
            assert parser.buffered == 104        # the head stays, nothing lost
            b.send(b"t" * (200_000 - 100))
            assert bytes(parser.feed(a.recv(300_000, csock.MSG_WAITALL))[0]) == (
                b"h" * 100 + b"t" * 199_900)


def test_a_ring_closed_while_it_receives_into_an_arena_keeps_the_arena() -> None:
    # The kernel may write into the arena until the ring's own teardown ends: the request,
    # and so the stream and its arena, stay alive (as a send's buffer does).
    a, b = csock.socketpair()
    with a, b:
        r = uring.Ring(16, 4, 4096)
        needs(r, "recv")
        parser = csock._fastio.FramedStream(a)
        arm_into_a_large_frame(r, a, b, parser, 1 << 20)
        b.send(b"t" * 60_000)
        r.close()
        assert r.closed and parser.buffered >= 104
        del parser
        b.send(b"t" * 60_000)
        time.sleep(0.05)


def test_recvmsg_reports_each_datagram_with_its_sender(ring) -> None:
    needs(ring, "recvmsg")
    rx, s1, s2 = udp_socket(), udp_socket(), udp_socket()
    with rx, s1, s2:
        request = ring.recvmsg(rx)
        for i in range(10):
            (s1 if i % 2 else s2).sendto(b"dgram %d" % i, rx.getsockname())
        got = []
        while len(got) < 10:
            got += [c.value for c in ring.wait(1, timeout=2)]
        assert [bytes(v) for v, _ in got] == [b"dgram %d" % i for i in range(10)]
        assert [addr for _, addr in got] == [(s1 if i % 2 else s2).getsockname() for i in range(10)]
        del got
        ring.cancel(request)
        (end,) = ring.wait(1, timeout=2)
        assert end.error.errno == errno.ECANCELED and request.done


def test_every_receive_hands_over_a_message_view(ring) -> None:
    """What a ring receive returns is a csock.MessageView, as every other receive in csock:
    code written for recv_batch or FramedStream takes it unchanged."""
    needs(ring, "recv", "recvmsg")
    a, b = csock.socketpair()
    rx, tx = udp_socket(), udp_socket()
    with a, b, rx, tx:
        ring.recv(a)
        b.send(b"stream")
        (streamed,) = ring.wait(1, timeout=2)
        tx.sendto(b"one", rx.getsockname())
        request = ring.recvmsg(rx)
        (message,) = ring.wait(1, timeout=2)
        ring.cancel(request)
        while not request.done:
            ring.wait(1, timeout=2)
        tx.sendto(b"two", rx.getsockname())
        (many,) = ring.recv_many([rx])
        views = [streamed.value, message.value.data] + [d.data for d in many]
        assert [bytes(v) for v in views] == [b"stream", b"one", b"two"]
        assert all(isinstance(v, csock.MessageView) for v in views), [type(v) for v in views]
        assert all(isinstance(v, uring.ReceivedView) for v in views)
        with pytest.raises(TypeError, match="not an acceptable base type"):
            type("Sub", (csock.MessageView,), {})           # final to Python code, as before
        del streamed, message, many, views
        assert ring.cancel_socket(a) == 1
        assert ring.wait(1, timeout=2)[0].error.errno == errno.ECANCELED
        assert ring.pool.outstanding == 0


def test_recv_many_returns_what_every_socket_has_queued(ring) -> None:
    needs(ring, "recvmsg")
    sockets = [udp_socket() for _ in range(16)]
    sender = udp_socket()
    try:
        for i, s in enumerate(sockets):
            for j in range(i % 4):
                sender.sendto(b"%d:%d" % (i, j), s.getsockname())
        got = ring.recv_many(sockets)
        assert [[bytes(v) for v, _ in per] for per in got] == \
            [[b"%d:%d" % (i, j) for j in range(i % 4)] for i in range(16)]
        assert {addr for per in got for _, addr in per} == {sender.getsockname()}
        del got
        assert ring.recv_many(sockets) == [[] for _ in sockets]
        assert ring.pending == 0 and ring.pool.outstanding == 0
    finally:
        for s in sockets + [sender]:
            s.close()


@pytest.mark.parametrize("receive", ["recv_many", "module recv_many", "recvmsg"])
def test_descriptors_a_unix_peer_passes_are_closed_not_kept(ring, receive) -> None:
    """The multishot recvmsg offers control room, so the kernel installed each fd an AF_UNIX
    peer passed (SCM_RIGHTS) in this process, and nothing closed it: one fd leaked per
    datagram (the stdlib's recvfrom offers no room: the kernel drops them)."""
    needs(ring, "recvmsg")
    read, write = os.pipe()
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    calls = {"recv_many": lambda: [bytes(v) for v, _ in ring.recv_many([b])[0]],
             "module recv_many": lambda: [bytes(d.data) for d in uring.recv_many([b])[0]],
             "recvmsg": lambda: (ring.recvmsg(b, drain=True), ring.wait(2, 1), [])[2]}
    try:
        calls[receive]()                            # (the default ring's fd, made once)
        before = fd_count()
        got = []
        for i in range(200):
            stdlib_socket.send_fds(a, [b"%d" % i], [read, write])
            got += calls[receive]()
        assert fd_count() == before
        if receive != "recvmsg":
            assert got == [b"%d" % i for i in range(200)]
    finally:
        for fd in (read, write):
            os.close(fd)
        a.close()
        b.close()


def test_recv_many_tells_interleaved_senders_apart(ring) -> None:
    """Datagrams from three senders, interleaved: each carries its own sender's address (the
    ring reuses the last address object only for the same sender)."""
    needs(ring, "recvmsg")
    receiver = udp_socket()
    senders = [udp_socket() for _ in range(3)]
    try:
        order = [0, 0, 1, 2, 1, 1, 0, 2, 2, 0]
        for n, k in enumerate(order):
            senders[k].sendto(b"%d" % n, receiver.getsockname())
        (got,) = ring.recv_many([receiver])
        assert [(bytes(v), addr) for v, addr in got] == [
            (b"%d" % n, senders[k].getsockname()) for n, k in enumerate(order)]
    finally:
        for s in senders + [receiver]:
            s.close()


def test_recv_many_raises_a_sockets_error_after_every_request_ended(ring) -> None:
    """A queued ICMP error (ECONNREFUSED on a connected UDP socket) raises from recv_many once
    every request has ended: nothing stays pending, no buffer stays held."""
    needs(ring, "recvmsg")
    probe = udp_socket()
    dead = probe.getsockname()
    probe.close()
    refused, other = udp_socket(), udp_socket()
    try:
        refused.connect(dead)
        refused.send(b"anyone?")                # the port is closed: ICMP, queued as an error
        time.sleep(0.05)
        with pytest.raises(ConnectionRefusedError):
            ring.recv_many([other, refused])
        assert ring.pending == 0 and ring.pool.outstanding == 0
    finally:
        refused.close()
        other.close()


@pytest.mark.parametrize("kind", ["udp", "seqpacket"])
def test_recv_on_a_record_socket_shows_a_record_cut_to_its_buffer(kind) -> None:
    """Ring.recv on a socket that keeps boundaries (UDP, SEQPACKET): a record longer than a
    ring buffer fills the buffer and the completion says it was cut, as recvmsg's MSG_TRUNC
    would (it read as a whole 256-byte record before); a record that fits is not."""
    if kind == "udp":
        rx, tx = udp_socket(), udp_socket()
        tx.connect(rx.getsockname())
    else:
        tx, rx = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    with uring.Ring(8, 16, 256) as small, rx, tx:
        needs(small, "recv")
        record = bytes(range(256)) * 4
        tx.send(record)
        tx.send(b"small")
        request = small.recv(rx)
        got = small.wait(2, timeout=2)
        assert [(c.error, c.truncated, bytes(c.value)) for c in got] == [
            (None, True, record[:256]), (None, False, b"small")]
        assert got[0].result == len(record)            # the record's whole length
        small.cancel(request)
        del got
        small.wait(1, timeout=2)


def test_framed_receives_need_a_stream_socket() -> None:
    rx, (a, b) = udp_socket(), csock.socketpair()
    with uring.Ring(8, 16, 256) as small, rx, a, b:
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            small.recv(rx, framed=csock.FramedStream(a))
        assert small.pending == 0


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
@pytest.mark.parametrize("make", [csock.socket, stdlib_socket.socket], ids=["csock", "stdlib"])
def test_recv_many_splits_what_udp_gro_coalesced(monkeypatch, forced_fallback, make) -> None:
    """On a socket with UDP_GRO, the kernel hands a GSO sender's datagrams over as one
    coalesced message: recv_many splits it back, as recv_batch does (each datagram its own
    bytes and the sender's address), on either path, whoever set the option (io_uring reads
    the kernel's UDP_GRO control message; the fallback asks a stdlib socket for the option)."""
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    rx, tx = make(csock.AF_INET, csock.SOCK_DGRAM), udp_socket()
    with rx, tx:
        rx.bind(("127.0.0.1", 0))
        if isinstance(rx, csock.socket):
            assert rx.enable_gro()
        else:
            rx.setsockopt(csock.SOL_UDP, 104, 1)                # UDP_GRO
        sent = [bytes([i]) * 100 for i in range(10)] + [b"tail"]
        assert tx.send_batch(sent, rx.getsockname(), segment_size=100) == len(sent)
        tx.sendto(b"alone", rx.getsockname())
        time.sleep(0.05)
        (got,) = uring.recv_many([rx])
        assert [bytes(d.data) for d in got] == sent + [b"alone"]
        assert {d.address for d in got} == {tx.getsockname()}
        assert not any(d.truncated for d in got)
        del got
        if not forced_fallback:
            assert uring.default_ring().pool.outstanding == 0


def test_the_fallback_leaves_a_stdlib_gro_sockets_blocking_mode_alone(monkeypatch) -> None:
    """The fallback drains a stdlib socket with UDP_GRO through a csock socket on a dup of its
    fd; made under a default timeout, that socket would make the file, which the caller's
    blocking socket shares, non-blocking (its recv would then raise BlockingIOError)."""
    monkeypatch.setattr(uring, "_fallback_forced", True)
    previous = stdlib_socket.getdefaulttimeout()
    with stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(csock.SOL_UDP, 104, 1)                # UDP_GRO
        stdlib_socket.setdefaulttimeout(5)
        try:
            assert uring.recv_many([rx]) == [[]]
        finally:
            stdlib_socket.setdefaulttimeout(previous)
        assert os.get_blocking(rx.fileno()) and rx.gettimeout() is None


def test_a_recvmsg_completion_of_a_coalesced_message_holds_each_datagram(ring) -> None:
    needs(ring, "recvmsg")
    rx, tx = udp_socket(), udp_socket()
    with rx, tx:
        assert rx.enable_gro()
        tx.send_batch([b"a" * 50, b"b" * 50, b"c"], rx.getsockname(), segment_size=50)
        request = ring.recvmsg(rx)
        (completion,) = ring.wait(1, timeout=2)
        assert [(bytes(d.data), d.address) for d in completion.value] == [
            (b"a" * 50, tx.getsockname()), (b"b" * 50, tx.getsockname()), (b"c", tx.getsockname())]
        assert completion.truncated is False
        assert {d.data.buffer_id for d in completion.value} == {completion.value[0].data.buffer_id}
        ring.cancel(request)
        while not request.done:
            ring.wait(1, timeout=2)
        assert ring.pool.outstanding == 1                   # the views hold their buffer...
        del completion
        assert ring.pool.outstanding == 0                   # ...until the last goes


def test_a_coalesced_message_cut_by_its_buffer_shows_the_datagram_cut() -> None:
    """A 640-byte ring buffer holds 240 bytes of a coalesced message of ten 100-byte
    datagrams: two whole, the head of the third, flagged (the rest is lost: as the doc says,
    a GRO socket wants buffers of 64 KiB)."""
    rx, tx = udp_socket(), udp_socket()
    with uring.Ring(8, 16, 640) as small, rx, tx:
        needs(small, "recvmsg")
        assert rx.enable_gro()
        sent = [bytes([i]) * 100 for i in range(10)]
        tx.send_batch(sent, rx.getsockname(), segment_size=100)
        time.sleep(0.05)
        (got,) = small.recv_many([rx])
        assert [(bytes(d.data), d.truncated) for d in got] == [
            (sent[0], False), (sent[1], False), (sent[2][:40], True)]
        del got
        assert small.pool.outstanding == 0


@settings(max_examples=40, deadline=None)
@given(runs=st.lists(st.tuples(st.sampled_from([0, 1, 7, 64, 100, 1200, 1472]),
                              st.integers(1, 30)), min_size=1, max_size=8),
       segment=st.sampled_from(["auto", "auto", 64, 100]),
       payload_room=st.sampled_from([1, 150, 1000, 4096, 65536]))
def test_every_split_of_a_coalesced_message_is_what_was_sent(runs, segment, payload_room):
    """Any run of datagrams a GSO sender coalesces, on buffers of any room: recv_many hands
    over, in order, each datagram whole or, where a buffer cut a coalesced message, the head
    of the one it cut, flagged; the datagrams after the cut are lost (buffers of 64 KiB, as
    the default ring's, lose none)."""
    rx, tx = udp_socket(), udp_socket()
    with uring.Ring(16, 256, uring.RECVMSG_HEADROOM + payload_room) as r, rx, tx:
        needs(r, "recvmsg")
        rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 16 << 20)
        assert rx.enable_gro()
        sizes = [size for size, count in runs for _ in range(count)]   # (runs coalesce)
        sent = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
        assert tx.send_batch(sent, rx.getsockname(), segment_size=segment) == len(sent)
        time.sleep(0.02)
        got: list[csock.Datagram] = []
        while more := r.recv_many([rx])[0]:     # (as many as the buffers offered at a time)
            got += more
        assert {d.address for d in got} == {tx.getsockname()}
        i = 0
        for d in got:           # each a later datagram sent, whole or (flagged) its head
            data = bytes(d.data)
            while i < len(sent) and not (
                    sent[i] == data if not d.truncated
                    else len(sent[i]) > len(data) and sent[i].startswith(data)):
                assert payload_room < 65536, f"datagram {i} lost"
                i += 1
            assert i < len(sent), f"{data[:8]!r} {d.truncated} was never sent"
            i += 1
        if payload_room >= 65536:
            assert [bytes(d.data) for d in got] == sent and not any(d.truncated for d in got)
        del got, d, more
        assert r.pool.outstanding == 0


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
def test_recv_many_fills_in_the_metadata_recv_batch_does(monkeypatch, forced_fallback) -> None:
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    rx, tx = udp_socket(), udp_socket()
    with rx, tx:
        rx.enable_metadata(timestamp=True, destination=True, tos=True)
        tx.setsockopt(csock.IPPROTO_IP, csock.IP_TOS, 0x28)
        before = time.time()
        tx.sendto(b"one", rx.getsockname())
        tx.sendto(b"two", rx.getsockname())
        time.sleep(0.05)
        (got,) = uring.recv_many([rx])
        assert [bytes(d.data) for d in got] == [b"one", b"two"]
        assert all(before - 1 < d.timestamp < time.time() + 1 for d in got)
        assert [(d.destination, d.tos) for d in got] == [("127.0.0.1", 0x28)] * 2
        assert all(d.interface == 1 for d in got)               # lo


def test_recv_many_shows_a_datagram_cut_to_its_buffer() -> None:
    """Each datagram is a csock.Datagram, as recv_batch returns: one longer than its buffer is
    cut and says so, never silently (a 512-byte ring buffer holds the message header, room
    for the sender's address and for control messages, and 112 bytes of payload)."""
    rx, tx = udp_socket(), udp_socket()
    with uring.Ring(8, 16, 512) as small, rx, tx:
        needs(small, "recvmsg")
        big = bytes(range(256)) * 4
        tx.sendto(big, rx.getsockname())
        tx.sendto(b"small", rx.getsockname())
        (got,) = small.recv_many([rx])
        assert [type(d) for d in got] == [csock.Datagram, csock.Datagram]
        (data, address), second = got                  # unpacks as recv_batch's do
        assert address == tx.getsockname() == second.address
        assert got[0].truncated is True and 0 < len(data) < 256
        assert bytes(data) == big[:len(data)]
        assert second.truncated is False and bytes(second.data) == b"small"
        del got, data, second
        assert small.pool.outstanding == 0


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
def test_module_recv_many_takes_the_largest_udp_datagram_whole(monkeypatch, forced_fallback):
    """csock.uring.recv_many gives the same objects on either path: a Datagram each, the
    largest UDP payload whole and not truncated (the default ring's buffers have room for
    it after the recvmsg header and the sender's address)."""
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    rx, tx = udp_socket(), udp_socket()
    with rx, tx:
        rx.setsockopt(csock.SOL_SOCKET, csock.SO_RCVBUF, 1 << 20)
        big = b"b" * 65507
        tx.sendto(big, rx.getsockname())
        tx.sendto(b"small", rx.getsockname())
        (got,) = uring.recv_many([rx])
        assert [type(d) for d in got] == [csock.Datagram, csock.Datagram]
        assert all(isinstance(d.data, csock.MessageView) for d in got)
        assert [(bytes(d.data), d.address, d.truncated) for d in got] == [
            (big, tx.getsockname(), False), (b"small", tx.getsockname(), False)]


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
@pytest.mark.parametrize("make", [csock.socket, stdlib_socket.socket], ids=["csock", "stdlib"])
def test_recv_many_does_not_wait_on_a_socket_with_a_timeout(monkeypatch, forced_fallback, make):
    """recv_many takes what is queued now: a socket's timeout is not a wait for more (the
    stdlib's recvmsg polls for up to the timeout first, even with MSG_DONTWAIT)."""
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    rx, tx = make(csock.AF_INET, csock.SOCK_DGRAM), udp_socket()
    with rx, tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2.0)
        tx.sendto(b"queued", rx.getsockname())
        time.sleep(0.01)
        start = time.monotonic()
        (got,) = uring.recv_many([rx])
        assert [(bytes(d.data), d.address) for d in got] == [(b"queued", tx.getsockname())]
        assert uring.recv_many([rx]) == [[]]
        assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
def test_module_batch_functions_use_the_process_ring(monkeypatch, forced_fallback) -> None:
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    rx, tx = udp_socket(), udp_socket()
    with rx, tx:
        counts = uring.send_many([(tx, b"a", rx.getsockname()), (tx, b"bc", rx.getsockname())])
        assert counts == [1, 2]
        (got,) = uring.recv_many([rx])
        assert [(bytes(v), addr) for v, addr in got] == [(b"a", tx.getsockname()),
                                                          (b"bc", tx.getsockname())]


def test_send_many_sends_every_pair_to_its_own_socket(ring) -> None:
    pairs = [csock.socketpair() for _ in range(8)]
    try:
        counts = ring.send_many([(a, b"to %d " % i * (i + 1)) for i, (a, _) in enumerate(pairs)])
        assert counts == [len(b"to %d " % i * (i + 1)) for i in range(8)]
        for i, (_, b) in enumerate(pairs):
            b.setblocking(False)
            assert b.recv(1000) == b"to %d " % i * (i + 1)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_send_many_keeps_the_order_of_sends_to_one_socket(ring) -> None:
    a, b = csock.socketpair()
    c, d = csock.socketpair()
    with a, b, c, d:
        big = [bytes([65 + i % 26]) * 300_000 for i in range(6)]       # each fills the buffer
        received = bytearray()
        reader = threading.Thread(target=lambda: received.extend(recv_all(b, sum(map(len, big)))))
        reader.start()
        counts = ring.send_many([(a, big[0]), (c, b"other"), (a, big[1]), (a, big[2]),
                                 (c, b" socket"), (a, big[3]), (a, big[4]), (a, big[5])])
        reader.join()
        assert counts == [300_000, 5, 300_000, 300_000, 7, 300_000, 300_000, 300_000]
        assert received == b"".join(big)
        d.setblocking(False)
        assert d.recv(100) == b"other socket"


def test_send_many_reports_an_error_after_every_send_finished(ring) -> None:
    a, b = csock.socketpair()
    c, d = csock.socketpair()
    with a, b, c, d:
        b.close()
        with pytest.raises(BrokenPipeError):
            ring.send_many([(a, b"x"), (c, b"still sent")])
        d.setblocking(False)
        assert d.recv(100) == b"still sent"
        assert ring.pending == 0


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
@pytest.mark.parametrize("bad", ["text", "object", "address"])
def test_send_many_sends_nothing_when_an_item_is_bad(ring, monkeypatch, forced_fallback, bad):
    """As send_batch: every item is checked before anything is sent, so an error for a bad
    one (in the first round or a later one) never comes after other items went out."""
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    a, b = csock.socketpair()
    with a, b:
        b.setblocking(False)
        bad_item = {"text": (a, "text"), "object": (object(), b"x"),
                    "address": (a, b"x", ("1.2.3.4", 1))}[bad]
        for send_many in (ring.send_many, uring.send_many):
            with pytest.raises(TypeError):
                send_many([(a, b"first"), (a, b"second"), bad_item])
            with pytest.raises(BlockingIOError):
                b.recv(100)                                  # nothing was sent
        assert ring.pending == 0
        assert ring.send_many([(a, b"after")]) == [5] and b.recv(100) == b"after"


# Run in a child: before the fix the read of the emptied list crashed the interpreter.
SEND_MANY_ITEM_EMPTIED = """
import csock
from csock import uring
a, b = csock.socketpair()
udp = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
second = [a, b"second"]

class PortThatEmptiesTheSecondItem:
    def __index__(self):
        second.clear()
        return 9

with uring.Ring(8, 0, 0) as ring:
    print(ring.send_many([(udp, b"first", ("127.0.0.1", PortThatEmptiesTheSecondItem())),
                          second]))
print(b.recv(100))
"""


def test_send_many_takes_each_item_as_it_was_when_called(tmp_path) -> None:
    """Preparing an item runs the caller's code (an address's __index__, a buffer's
    __buffer__): a later item, a list that code empties, is sent as it was when the call
    began (send_many read item[0] of the emptied list: freed memory, a crash)."""
    assert script_output(tmp_path, SEND_MANY_ITEM_EMPTIED) == ["[5, 6]", "b'second'"]


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
def test_a_failed_send_many_says_which_items_went_out(ring, monkeypatch, forced_fallback):
    """A send the kernel fails (a connected UDP socket's ECONNREFUSED) raises, and the error's
    ``counts`` tells the items sent (their byte counts) from those not (None), so that a caller
    resends only those; a stream would otherwise get the sent ones twice."""
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    a, b = csock.socketpair()
    refused = refused_udp_socket()
    with a, b, refused:
        b.setblocking(False)
        for send_many in (ring.send_many, uring.send_many):
            refuse(refused)
            with pytest.raises(ConnectionRefusedError) as caught:
                send_many([(a, b"first"), (refused, b"refused"), (a, b"second")])
            assert caught.value.counts == [5, None, None]
            assert b.recv(100) == b"first"
            with pytest.raises(BlockingIOError):
                b.recv(100)                                  # "second" was not sent
        assert ring.pending == 0


@pytest.mark.parametrize("size", [1 << 18, 8 << 20], ids=["fits", "8MiB"])
def test_send_zc_sends_the_whole_buffer_and_holds_it_until_the_notification(ring, size) -> None:
    """The export is held until the kernel's notification, and on a stream the whole buffer
    goes, as Ring.send sends it (MSG_WAITALL): 8 MiB, more than the socket's buffers hold,
    completed with what fitted at first (about 3.7 MiB) and left the peer waiting."""
    needs(ring, "send_zc")
    payload = bytearray(os.urandom(size))
    with stream_pair("tcp4") as (a, b):
        request = ring.send_zc(a, payload)
        ring.submit()                               # (requests are queued until submitted)
        with pytest.raises(BufferError):
            payload.append(0)                       # the export is held
        b.settimeout(5)                             # a short send: TimeoutError, not a hang
        received = bytearray()
        completions = []
        while len(received) < len(payload):
            received += b.recv(1 << 20)
            completions += ring.wait(0, timeout=0)
        while not request.done:
            completions += ring.wait(1, timeout=2)
        assert received == payload
        assert [c.value for c in completions] == [len(payload)]
        payload.append(0)                           # released with the last completion


def test_multishot_accept_gives_each_connection_its_own_socket(ring) -> None:
    needs(ring, "accept")
    with csock.create_server(("127.0.0.1", 0)) as server:
        request = ring.accept(server)
        clients = [csock.create_connection(server.getsockname()) for _ in range(3)]
        accepted = []
        while len(accepted) < 3:
            accepted += [c.value for c in ring.wait(1, timeout=2)]
        try:
            assert all(isinstance(s, csock.socket) for s in accepted)
            assert sorted(s.getpeername() for s in accepted) == \
                sorted(c.getsockname() for c in clients)
            by_peer = {s.getpeername(): s for s in accepted}
            for i, client in enumerate(clients):
                client.sendall(b"client %d" % i)
                assert by_peer[client.getsockname()].recv(100) == b"client %d" % i
            assert not request.done
            assert ring.cancel(request)
            (end,) = ring.wait(1, timeout=2)
            assert end.error.errno == errno.ECANCELED and request.done
            assert not ring.cancel(request)
        finally:
            for s in accepted + clients:
                s.close()


def test_close_from_another_thread_cancels_a_pending_recv(ring) -> None:
    needs(ring, "recv")
    a, b = csock.socketpair()
    with b:
        request = ring.recv(a)
        got = []
        waiter = threading.Thread(target=lambda: got.extend(ring.wait(1, timeout=5)))
        waiter.start()
        time.sleep(0.1)
        a.close()                                   # the recv holds a: close(2) deferred
        waiter.join()
        assert [c.error.errno for c in got] == [errno.ECANCELED]
        assert request.done and a.fileno() == -1
        b.settimeout(2)
        assert b.recv(10) == b""                    # the fd was really closed: end of stream


def test_poll_completes_once_when_the_socket_becomes_ready(ring) -> None:
    """A poll request completes with the ready mask: not while nothing is queued, at once
    when the socket already is ready; it holds the socket (close() cancels it, then the fd
    really closes)."""
    needs(ring, "poll")
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    with b:
        ring.poll(a)
        assert ring.wait(0, timeout=0.05) == []                 # nothing to read yet
        b.send(b"one")
        (ready,) = ring.wait(1, timeout=5)
        assert ready.value & select.POLLIN and not ready.more and ready.request.done
        ring.poll(a)
        (again,) = ring.wait(1, timeout=5)                      # still readable: at once
        assert again.value & select.POLLIN and a.recv(10) == b"one"
        ring.poll(a, select.POLLOUT)
        assert ring.wait(1, timeout=5)[0].value == select.POLLOUT
        request = ring.poll(a)
        ring.submit()
        a.close()                                               # close(2) waits for the poll
        (cancelled,) = ring.wait(1, timeout=5)
        assert cancelled.request is request and cancelled.error.errno == errno.ECANCELED
        assert a.fileno() == -1 and ring.pending == 0
        with pytest.raises(ValueError, match="poll"):
            ring.poll(b, 0)


def test_a_waiter_sees_completions_while_the_submitting_thread_computes(ring) -> None:
    """The kernel runs a finished request's work in the thread that submitted it, and with
    COOP_TASKRUN only when that thread next enters the kernel: a thread computing in Python
    (no system call) must still let another thread's wait() see the completion promptly (the
    scheduler tick enters the kernel)."""
    needs(ring, "poll")
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
    with a, b:
        ring.poll(a)
        ring.submit()                           # submitted by this thread
        got: list[float] = []
        waiter = threading.Thread(target=lambda: got.extend(
            time.monotonic() for _ in ring.wait(1, timeout=5)))
        waiter.start()
        sender = threading.Timer(0.1, b.send, (b"x",))
        sender.start()
        start = time.monotonic()
        deadline = start + 2.0
        while not got and time.monotonic() < deadline:
            pass                                # busy in Python: no system call of ours
        waiter.join()
        sender.join()
        assert got and got[0] - start < 1.0


def test_close_from_another_thread_ends_a_blocked_send_and_frees_its_buffer(ring) -> None:
    a, b = csock.socketpair()
    with b:
        payload = bytearray(b"s" * (8 << 20))        # far more than the socket buffers hold
        request = ring.send(a, payload)
        got = []
        waiter = threading.Thread(target=lambda: got.extend(ring.wait(1, timeout=5)))
        waiter.start()
        time.sleep(0.1)
        assert not request.done
        with pytest.raises(BufferError):
            payload.append(0)                       # the kernel may still read it
        a.close()
        waiter.join()
        assert request.done and len(got) == 1
        (done,) = got                               # cancelled: the count of what went
        assert done.error is None and 0 < done.value < len(payload)
        payload.append(0)                           # the export went with the completion
        b.settimeout(2)
        received = 0
        while chunk := b.recv(1 << 16):
            assert chunk == b"s" * len(chunk)
            received += len(chunk)
        assert received == done.value               # then end of stream: the fd was closed


def test_closes_under_load_never_deliver_a_byte_to_another_socket(ring) -> None:
    """Sockets closed and replaced (their fd numbers reused) while every one has a multishot
    recv armed and data flowing: each completion carries only its own socket's tag byte."""
    needs(ring, "recv")
    lock = threading.Lock()
    live: dict[int, tuple[csock.socket, csock.socket, int]] = {}    # slot -> pair and its tag
    tags: dict[int, int] = {}                                       # id(receiver) -> tag
    stop = threading.Event()
    opened = []

    def open_pair(slot: int, tag: int) -> None:
        a, b = csock.socketpair()           # takes the fd numbers the last close freed
        b.setblocking(False)
        opened.append(tag)
        with lock:
            live[slot] = (a, b, tag)
            tags[id(a)] = tag
        ring.recv(a)

    def churn() -> None:
        for n in range(16, 16 * 12):
            if stop.is_set():
                return
            slot = n % 16
            with lock:
                a, b, _ = live.pop(slot)
            a.close()                       # a recv is armed on it: cancelled, close deferred
            b.close()
            open_pair(slot, slot + 16 * (n // 16))
            time.sleep(0.002)

    def send() -> None:
        while not stop.is_set():
            with lock:
                pairs = [(b, tag) for _, b, tag in live.values()]
            for b, tag in pairs:
                try:
                    b.send(bytes([tag]) * 512)
                except OSError:
                    pass
            time.sleep(0.0005)

    for slot in range(16):
        open_pair(slot, slot)
    threads = [threading.Thread(target=churn), threading.Thread(target=send)]
    for t in threads:
        t.start()
    checked = 0
    deadline = time.monotonic() + 20
    try:
        while threads[0].is_alive() and time.monotonic() < deadline:
            for c in ring.wait(1, timeout=0.1):
                if c.error is None and c.value:
                    tag = tags[id(c.request.sock)]
                    assert bytes(c.value) == bytes([tag]) * len(c.value)
                    checked += len(c.value)
    finally:
        stop.set()
        for t in threads:
            t.join()
        for a, b, _ in live.values():
            a.close()
            b.close()
        # A request another thread submitted completes its cancel through that thread's
        # task work (the kernel's, on its next return to user space or from a worker): its
        # last completion can come a moment after close().
        deadline = time.monotonic() + 5
        while ring.pending and time.monotonic() < deadline:
            ring.wait(1, timeout=0.5)
    assert checked > 0 and len(opened) == 16 * 12
    assert ring.pending == 0, (ring.pending_requests(), ring.cancels_repeated)


def test_close_with_no_waiter_cancels_and_closes_at_once(ring) -> None:
    needs(ring, "recv", "accept")
    a, b = csock.socketpair()
    server = csock.create_server(("127.0.0.1", 0))
    with b:
        ring.recv(a)
        ring.accept(server)
        ring.submit()
        a.close()
        server.close()
        assert ring.pending == 0
        b.settimeout(2)
        assert b.recv(10) == b""
        cancelled = ring.wait(0, timeout=0)
        assert sorted(c.request.op for c in cancelled) == ["accept", "recv"]
        assert all(c.error.errno == errno.ECANCELED for c in cancelled)


def test_closing_a_ring_nobody_waits_on_closes_the_connections_it_accepted() -> None:
    """Connections a multishot accept took before close(), never reaped by a wait(): close()
    reaps them, and with no thread in wait() to hand them to (wait() on a closed ring is a
    ValueError), closes them: their peers see the end of stream (they stayed open, out of
    reach, for the life of the Ring object)."""
    r = uring.Ring(16, 0)
    needs(r, "accept")
    with csock.create_server(("127.0.0.1", 0)) as server:
        r.accept(server)
        r.submit()
        before = fd_count()
        clients = [csock.create_connection(server.getsockname()) for _ in range(3)]
        time.sleep(0.05)
        r.close()
        assert fd_count() == before + 3 - 1            # the clients, not the ring
        for client in clients:
            with client:
                client.settimeout(2)
                assert client.recv(10) == b""


def test_closing_the_ring_from_another_thread_wakes_its_waiter() -> None:
    r = uring.Ring(16, 8, 256)
    needs(r, "recv")
    a, b = csock.socketpair()
    with b:
        r.recv(a)
        got = []
        errors = []

        def waiter() -> None:
            try:
                got.extend(r.wait(1))
            except ValueError as error:
                errors.append(error)

        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.1)
        r.close()                                   # cancels the recv, wakes the waiter
        thread.join(5)
        assert not thread.is_alive() and r.closed and r.pending == 0
        assert not errors and [c.error.errno for c in got] == [errno.ECANCELED]
        a.close()                                   # the hold was given back: closes now
        b.settimeout(2)
        assert b.recv(10) == b""


def test_a_closed_socket_is_refused_before_anything_is_queued(ring) -> None:
    a, b = csock.socketpair()
    a.close()
    b.close()
    for call in (lambda: ring.recv(a), lambda: ring.send(a, b"x"), lambda: ring.accept(a)):
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.errno == errno.EBADF
    assert ring.pending == 0
    assert ring.wait(0, timeout=0) == []


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
def test_recv_many_refuses_a_bad_socket_before_taking_any_datagram(
        ring, monkeypatch, forced_fallback) -> None:
    """A socket recv_many cannot drain (a SEQPACKET or stream socket, whose end of stream a
    multishot recvmsg would read as empty records for ever; a closed one) anywhere in the
    list raises before any datagram is taken: none is lost with the call."""
    needs(ring, "recvmsg")
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    rx, tx = udp_socket(), udp_socket()
    records, peer = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    closed = udp_socket()
    closed.close()
    with rx, tx, records, peer:
        tx.sendto(b"kept", rx.getsockname())
        peer.send(b"record")
        peer.close()
        time.sleep(0.02)
        for receive in (ring.recv_many, uring.recv_many):
            with pytest.raises(ValueError, match="SOCK_DGRAM"):
                receive([rx, records])
            with pytest.raises(OSError) as caught:
                receive([rx, closed])
            assert caught.value.errno == errno.EBADF
            with pytest.raises(TypeError, match="socket object"):
                receive([rx, object()])
        with pytest.raises(ValueError, match="SOCK_DGRAM"):
            ring.recvmsg(records)
        assert ring.pending == 0
        assert [bytes(d.data) for d in ring.recv_many([rx])[0]] == [b"kept"]
        assert records.recv(100) == b"record"


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
def test_recv_many_keeps_the_datagrams_it_took_when_a_socket_fails(
        ring, monkeypatch, forced_fallback) -> None:
    """A socket's error (here a connected UDP socket's ECONNREFUSED, from an ICMP port
    unreachable) does not cost the datagrams the call took from the others: they are returned
    and the error is raised by the next recv_many that names the socket, as recvmmsg(2) saves
    an error that follows a datagram for the next call. With nothing taken, it raises at once."""
    needs(ring, "recvmsg")
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    rx, tx, refused = udp_socket(), udp_socket(), refused_udp_socket()
    with rx, tx, refused:
        for receive in (ring.recv_many, uring.recv_many):
            tx.sendto(b"kept", rx.getsockname())
            refuse(refused)
            got = receive([rx, refused])
            assert [[bytes(d.data) for d in datagrams] for datagrams in got] == [[b"kept"], []]
            tx.sendto(b"queued", rx.getsockname())
            time.sleep(0.02)
            with pytest.raises(ConnectionRefusedError):
                receive([rx, refused])                      # (before any datagram is taken)
            assert [[bytes(d.data) for d in datagrams] for datagrams in receive([rx, refused])] \
                == [[b"queued"], []]
            refuse(refused)
            with pytest.raises(ConnectionRefusedError):
                receive([rx, refused])                      # nothing taken: raised at once
            assert receive([rx, refused]) == [[], []]
        assert ring.pending == 0


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
def test_a_saved_receive_error_goes_to_the_sockets_next_batch_receive(
        ring, monkeypatch, forced_fallback) -> None:
    """A csock socket keeps the error recv_many saved for it in its own state, where
    recv_batch keeps its own: whichever batch receive comes next raises it, once."""
    needs(ring, "recvmsg")
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    rx, tx, refused = udp_socket(), udp_socket(), refused_udp_socket()
    with rx, tx, refused:
        tx.sendto(b"kept", rx.getsockname())
        refuse(refused)
        assert [len(datagrams) for datagrams in uring.recv_many([rx, refused])] == [1, 0]
        refused.setblocking(False)
        with pytest.raises(ConnectionRefusedError):
            refused.recv_batch()
        assert uring.recv_many([rx, refused]) == [[], []]
        assert ring.pending == 0


@pytest.mark.parametrize("forced_fallback", [False, True], ids=["uring", "fallback"])
def test_recv_many_refuses_a_socket_named_twice(ring, monkeypatch, forced_fallback) -> None:
    """Two requests on one socket would split its datagrams between two lists at random (the
    order between them lost): a socket named twice raises before any datagram is taken."""
    needs(ring, "recvmsg")
    monkeypatch.setattr(uring, "_fallback_forced", forced_fallback)
    rx, other, tx = udp_socket(), udp_socket(), udp_socket()
    with rx, other, tx:
        for payload in (b"first", b"second"):
            tx.sendto(payload, rx.getsockname())
        time.sleep(0.02)
        same_fd = csock.socket(fileno=rx.fileno())      # another object on rx's fd
        try:
            for receive in (ring.recv_many, uring.recv_many):
                for twice in ([rx, other, rx], [rx, same_fd]):
                    with pytest.raises(ValueError, match="twice"):
                        receive(twice)
        finally:
            same_fd.detach()
        assert ring.pending == 0
        got = uring.recv_many([rx, other])
        assert [[bytes(d.data) for d in datagrams] for datagrams in got] == [
            [b"first", b"second"], []]


def test_bad_arguments_raise_clear_errors(ring) -> None:
    with pytest.raises(ValueError):
        uring.Ring(8, 3)
    with pytest.raises(ValueError):
        uring.Ring(0)
    a, b = csock.socketpair()
    with a, b:
        with pytest.raises(TypeError):
            ring.send(a, "text")
        with pytest.raises(TypeError):
            ring.recv(object())
        with pytest.raises(ValueError):
            ring.send_many([(a,)])
        with pytest.raises(BufferError):
            ring.send(a, memoryview(b"abcdef")[::2])
        with pytest.raises((TypeError, OSError)):
            ring.sendmsg(csock.socket(csock.AF_INET, csock.SOCK_DGRAM), b"x", "no address")
        assert ring.pending == 0
    r = uring.Ring(8, 0)
    r.close()
    with pytest.raises(ValueError):
        r.wait()
    rx = udp_socket()
    with uring.Ring(8, 8, uring.RECVMSG_HEADROOM) as small, rx:
        with pytest.raises(ValueError, match="RECVMSG_HEADROOM"):
            small.recvmsg(rx)                   # no room for a byte of payload (EFAULT before)
        with pytest.raises(ValueError, match="RECVMSG_HEADROOM"):
            small.recv_many([rx])
        assert small.pending == 0


def test_a_host_with_a_nul_is_refused_before_anything_is_queued(ring) -> None:
    """As the stdlib's sendto: TypeError, never the host cut at the NUL (the datagram went to
    127.0.0.1)."""
    rx, tx = udp_socket(), csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    with rx, tx:
        rx.setblocking(False)
        address = ("127.0.0.1\0.evil.example", rx.getsockname()[1])
        with pytest.raises(TypeError, match="host name must not contain null character"):
            ring.sendmsg(tx, b"sendmsg", address)
        for send_many in (ring.send_many, uring.send_many):
            with pytest.raises(TypeError, match="host name must not contain null character"):
                send_many([(tx, b"send_many", address)])
        assert ring.pending == 0
        assert ring.wait(0, timeout=0.1) == []
        with pytest.raises(BlockingIOError):
            rx.recv(100)


def test_ipv6_address_fields_are_read_as_the_stdlib_reads_them(ring) -> None:
    """flowinfo and scope_id of sendmsg's and send_many's addresses as the stdlib's sendto
    takes them: a float is TypeError with nothing queued, never truncated and sent; __index__
    is taken; both wrap modulo 2**32."""
    needs(ring, "sendmsg")
    tx, rx = udp_pair("v6", blocking=False)
    with tx, rx, stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM) as std:
        for fields in IPV6_FIELDS:
            address = ("::1", rx.getsockname()[1], *fields)
            expected = outcome(partial(std.sendto, b"std", address))
            got = [outcome(partial(ring.sendmsg, tx, b"sendmsg", address)),
                   outcome(partial(ring.send_many, [(tx, b"ring", address)])),
                   outcome(partial(uring.send_many, [(tx, b"module", address)]))]
            assert got == [expected] * 3, fields
            if expected == "ok":
                assert [c.error for c in ring.wait(1, timeout=5)] == [None]
                assert sorted(rx.recv(100) for _ in range(4)) == [b"module", b"ring", b"sendmsg",
                                                                  b"std"]
            assert ring.pending == 0
            with pytest.raises(BlockingIOError):
                rx.recv(100)


def test_stdlib_sockets_work_too(ring) -> None:
    needs(ring, "recv")
    a, b = stdlib_socket.socketpair()
    with a, b:
        ring.recv(a)
        assert ring.send_many([(b, b"plain")]) == [5]
        (c,) = ring.wait(1, timeout=2)
        assert bytes(c.value) == b"plain"
        ring.cancel_socket(a)
        ring.wait(1, timeout=2)


def nonblocking_recv(sock: stdlib_socket.socket) -> bytes | None:
    """What sock has queued now (None: nothing)."""
    try:
        return sock.recv(1 << 16, stdlib_socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


def test_a_stdlib_sockets_queued_requests_keep_to_its_file_after_close(ring) -> None:
    """A stdlib socket's close() is the stdlib's (no in-flight count): a send and a recv
    queued on it, closed before the submit, must not reach the socket that takes its number
    meanwhile. They stay on the socket's own file: the bytes go to its peer."""
    needs(ring, "recv")
    a, peer = stdlib_socket.socketpair()
    number = a.fileno()
    send = ring.send(a, b"SECRET-FOR-PEER-OF-A")
    recv = ring.recv(a)
    a.close()
    x, y = stdlib_socket.socketpair()           # the lowest free numbers: a's is one
    with peer, x, y:
        assert number in (x.fileno(), y.fileno())
        other = y if x.fileno() == number else x    # the new socket's peer
        other.send(b"VICTIM-DATA")
        ring.submit()
        done: list[uring.Completion] = []
        while not send.done:
            done += ring.wait(1, timeout=2)
        time.sleep(0.05)
        done += ring.wait(0, timeout=0)
        assert [(c.request.op, c.value if c.error is None else c.error) for c in done] == [
            ("send", 20)]                           # the recv took nothing
        del done
        peer.settimeout(2)
        assert peer.recv(100) == b"SECRET-FOR-PEER-OF-A"
        time.sleep(0.05)
        assert nonblocking_recv(other) is None      # nothing went to the new connection
        reused = x if x.fileno() == number else y
        assert nonblocking_recv(reused) == b"VICTIM-DATA"   # and its bytes are still its own
        peer.send(b"to a")                          # a's recv still receives a's file
        (got,) = ring.wait(1, timeout=2)
        assert bytes(got.value) == b"to a"
        del got
        ring.cancel(recv)
        assert [c.error.errno for c in ring.wait(1, timeout=2)] == [errno.ECANCELED]


def test_a_stdlib_sockets_multishot_rearm_keeps_to_its_file() -> None:
    """A multishot recv the ring arms again (here: after the rest of a large frame came into
    the stream's arena with one plain recv) names the file it was made for, even when the
    stdlib socket was closed, and its number taken, in a callback before the re-arm's
    submit."""
    with uring.Ring(16, 4, 4096) as r:
        needs(r, "recv")
        a, b = stdlib_socket.socketpair()
        number = a.fileno()
        parser = csock._fastio.FramedStream(a)
        request = arm_into_a_large_frame(r, a, b, parser, 20_000)
        got: list[bytes] = []
        taken: list[stdlib_socket.socket] = []

        def close_and_reuse(completion: uring.Completion) -> None:
            got.extend(bytes(m) for m in completion.value)
            assert completion.more          # re-armed: its SQE waits for the submit
            a.close()
            taken.extend(stdlib_socket.socketpair())

        request.callback = close_and_reuse
        b.send(b"t" * 19_900)                   # the frame's rest: its recv completes it
        deadline = time.monotonic() + 2
        while not taken and time.monotonic() < deadline:
            r.run_callbacks(lambda callback, error: pytest.fail(repr(error)))
            time.sleep(0.01)
        assert got == [b"h" * 100 + b"t" * 19_900]
        x, y = taken
        with b, x, y:
            assert number in (x.fileno(), y.fileno())
            reused, other = (x, y) if x.fileno() == number else (y, x)
            other.send(b"VICTIM-DATA")
            time.sleep(0.05)
            request.callback = None
            r.run_callbacks(lambda callback, error: None)
            assert nonblocking_recv(reused) == b"VICTIM-DATA"  # not taken by the re-arm
            b.send(frame(b"after"))                 # the re-armed recv still serves a's file
            messages: list[bytes] = []
            deadline = time.monotonic() + 2
            while not messages and time.monotonic() < deadline:
                messages += [bytes(m) for c in r.wait(1, timeout=1) for m in c.value]
            assert messages == [b"after"]
            r.cancel(request)
            r.wait(1, timeout=2)
            assert request.done


def test_a_stdlib_sockets_requests_hold_a_dup_until_their_last_completion(ring) -> None:
    """The file a stdlib socket's request names is its own dup: closed at the request's last
    completion, or when the ring closes; no fd is left over."""
    needs(ring, "recv")
    a, b = stdlib_socket.socketpair()
    with a, b:
        fds = fd_count()
        for i in range(200):
            ring.recv(a, multishot=False)
            assert ring.send_many([(b, b"%04d" % i)]) == [4]
            (c,) = ring.wait(1, timeout=2)
            assert bytes(c.value) == b"%04d" % i
            del c
        assert fd_count() == fds
        ring.recv(a)
        ring.submit()
        a.close()                                   # the stdlib's: the request keeps the file
        b.send(b"still")
        (c,) = ring.wait(1, timeout=2)
        assert bytes(c.value) == b"still"
        del c
        assert fd_count() == fds                    # a's number is free, its dup is open
        with uring.Ring(8, 8, 256) as other:
            other.recv(b)
            other.submit()
            assert fd_count() == fds + 2            # the ring's fd and the recv's dup
        assert fd_count() == fds                    # the dup went with the ring
        assert ring.cancel_socket(a) == 1
        assert [c.error.errno for c in ring.wait(1, timeout=2)] == [errno.ECANCELED]
        assert fd_count() == fds - 1                # a's file is closed: b sees the end
        b.settimeout(2)
        assert b.recv(10) == b""


def test_wait_times_out_and_ctrl_c_interrupts_it(ring) -> None:
    needs(ring, "recv")
    a, b = csock.socketpair()
    with a, b:
        ring.recv(a)
        start = time.monotonic()
        assert ring.wait(1, timeout=0.05) == []
        assert 0.04 < time.monotonic() - start < 2
        # (A shell without job control starts background jobs, such as a test run, with
        # SIGINT ignored: Ctrl-C must be Python's here whatever ran the tests.)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                ring.wait(1)
        finally:
            timer.join()
            signal.signal(signal.SIGINT, previous)
        ring.cancel_socket(a)
        ring.wait(1, timeout=2)


def test_a_child_forked_while_the_default_ring_was_being_made_can_make_its_own() -> None:
    """fork() while another thread is inside default_ring() (here: this thread, holding its
    lock): the child's copy of the lock stays held, and its recv_many/send_many hung for ever
    unless the lock is made anew in the child."""
    with uring._lock:
        pid = os.fork()
        if pid == 0:                                        # the child
            code = 1
            try:
                signal.alarm(10)                            # (a hang ends the child: code -14)
                a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
                assert uring.send_many([(a, b"child")]) == [5]
                code = 0 if uring.default_ring() is not None and b.recv(10) == b"child" else 2
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_after_fork_the_child_never_touches_the_parents_ring(ring) -> None:
    needs(ring, "recv")
    a, b = csock.socketpair()
    with a, b:
        request = ring.recv(a)
        pid = os.fork()
        if pid == 0:                                        # the child
            code = 1
            try:
                try:
                    ring.wait(0, timeout=0)
                except OSError:
                    c, d = csock.socketpair()
                    own = uring.default_ring()
                    own.recv(c)
                    own.send_many([(d, b"child ring")])
                    (got,) = own.wait(1, timeout=2)
                    code = 0 if bytes(got.value) == b"child ring" else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        b.send(b"parent still")                             # the parent's request is intact
        (got,) = ring.wait(1, timeout=2)
        assert bytes(got.value) == b"parent still" and not request.done
        del got
        ring.cancel(request)
        ring.wait(1, timeout=2)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_or_memory_growth_over_10000_operations(ring) -> None:
    needs(ring, "recv", "recvmsg")
    a, b = csock.socketpair()
    rx, tx = udp_socket(), udp_socket()
    with a, b, rx, tx:
        def round_trip(i: int) -> None:
            request = ring.recv(a, multishot=False)
            ring.send_many([(b, b"%08d" % i), (tx, b"u%07d" % i, rx.getsockname())])
            (c,) = ring.wait(1, timeout=2)
            assert bytes(c.value) == b"%08d" % i and request.done
            ((view, _),) = ring.recv_many([rx])[0:1][0]
            assert bytes(view) == b"u%07d" % i

        for i in range(500):
            round_trip(i)
        fds = fd_count()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(5000):                           # 2 ops and a batch each: > 10,000
                round_trip(i)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert fd_count() == fds
        assert grown < 64 * 1024, f"traced memory grew by {grown} bytes"
        assert ring.pending == 0 and ring.pool.outstanding == 0


def _lazy_mapping(size: int) -> mmap.mmap:
    """size bytes of anonymous memory the kernel only provides where they are touched."""
    try:
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                         | getattr(mmap, "MAP_NORESERVE", 0))
    except OSError as error:
        pytest.skip(f"cannot map {size} bytes: {error}")


def test_a_send_longer_than_an_sqe_can_say_is_not_cut(ring: uring.Ring) -> None:
    """An SQE's length is 32 bits: a 4 GiB + 16 byte buffer went out as a 16-byte datagram
    (and a stream send reported 16 bytes as the whole). The request asks for what one
    send(2) takes at most, so the kernel judges the real size (EMSGSIZE here)."""
    huge = _lazy_mapping(2**32 + 16)
    rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
    with rx, tx, huge:
        rx.bind(("127.0.0.1", 0))
        tx.connect(rx.getsockname())
        for send in (ring.send, ring.send_zc):
            request = send(tx, huge)
            (completion,) = ring.wait(1, 5)
            assert completion.request is request
            assert completion.error is not None and completion.error.errno == errno.EMSGSIZE
        with pytest.raises(OSError) as caught:
            uring.send_many([(tx, huge)])
        assert caught.value.errno == errno.EMSGSIZE
        rx.setblocking(False)
        with pytest.raises(BlockingIOError):
            rx.recv(100)


def test_a_ring_is_initialised_once_even_after_close() -> None:
    """__init__ again on a closed Ring reopened it with the old ring's ops and buffer pool."""
    ring = uring.Ring(8, 8, 4096)
    with pytest.raises(ValueError, match="ran already"):
        ring.__init__(8, 8, 4096)
    ring.close()
    with pytest.raises(ValueError, match="ran already"):
        ring.__init__(8, 8, 4096)
    assert ring.closed


def full_unix_dgram(tmp_path: Any, connected: bool) -> tuple[Any, Any, Any, int]:
    """(sender, receiver, address or None, count): a non-blocking AF_UNIX datagram sender
    whose bound receiver's queue is full of `count` datagrams b"fill%d" (the sender not the
    receiver's peer: the kernel's recvq-full path, which a socketpair never takes)."""
    path = str(tmp_path / "rx")
    rx = csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM)
    rx.bind(path)
    tx = csock.socket(csock.AF_UNIX, csock.SOCK_DGRAM)
    tx.setblocking(False)
    if connected:
        tx.connect(path)
    count = 0
    while True:
        try:
            payload = b"fill%d" % count
            tx.send(payload) if connected else tx.sendto(payload, path)
        except BlockingIOError:
            break
        count += 1
    return tx, rx, None if connected else path, count


@pytest.mark.timeout(20)                # (before the fix, send_many waited for ever)
@pytest.mark.parametrize("op", ["send", "sendmsg", "sendmsg-to", "send_many", "send_many-to"])
def test_a_datagram_send_to_a_full_unix_peer_fails_with_eagain_and_sends_nothing(
        ring, tmp_path, op: str) -> None:
    """The kernel's unix_dgram_sendmsg copies the payload out of the request's iov before it
    finds the peer's queue full; io_uring retried such a send after a poll with the iov
    consumed, and the peer got an empty datagram (count 0). A datagram send completes with
    EAGAIN instead, and only what was sent, whole and in order, reaches the peer; sent again
    once there is room, the datagram arrives whole."""
    needs(ring, "send", "sendmsg")
    tx, rx, address, count = full_unix_dgram(tmp_path, connected=not op.endswith("-to"))
    payload = b"hello-from-ring"
    with tx, rx:
        if op.startswith("send_many"):
            with pytest.raises(BlockingIOError) as raised:
                ring.send_many([(tx, payload, address) if address else (tx, payload)])
            assert raised.value.counts == [None]
        else:
            if op == "send":
                ring.send(tx, payload)
            else:
                ring.sendmsg(tx, payload, address)
            (done,) = ring.wait(1, timeout=5)           # at once, not once there is room
            assert isinstance(done.error, BlockingIOError) and done.value is None
        assert ring.pending == 0
        rx.setblocking(False)
        assert [rx.recv(100) for _ in range(count)] == [b"fill%d" % i for i in range(count)]
        with pytest.raises(BlockingIOError):
            rx.recv(100)                                # nothing else: no empty datagram
        ring.sendmsg(tx, payload, address)
        (done,) = ring.wait(1, timeout=5)
        assert done.error is None and done.value == len(payload)
        assert rx.recv(100) == payload


@pytest.mark.parametrize("family", ["udp", "seqpacket"])
def test_datagram_and_record_sends_deliver_exactly_what_was_sent(ring, family: str) -> None:
    """UDP sends (MSG_DONTWAIT on the SQE) deliver as before; a SEQPACKET send still waits
    for room (the kernel allocates the record before it copies the payload, so io_uring's
    retry sends it whole) and delivers every record in order."""
    needs(ring, "send", "sendmsg")
    if family == "udp":
        rx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        tx = csock.socket(csock.AF_INET, csock.SOCK_DGRAM)
        tx.connect(rx.getsockname())
        with tx, rx:
            ring.send(tx, b"one")
            ring.sendmsg(tx, b"two", rx.getsockname())
            assert sorted(c.value for c in ring.wait(2, timeout=5)) == [3, 3]
            assert ring.send_many([(tx, b"three"), (tx, b"four", rx.getsockname())]) == [5, 4]
            rx.settimeout(5)
            assert sorted(rx.recv(10) for _ in range(2)) == [b"one", b"two"]
            assert [rx.recv(10) for _ in range(2)] == [b"three", b"four"]
        return
    tx, rx = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    with tx, rx:
        tx.setblocking(False)
        count = 0
        while True:
            try:
                tx.send(b"fill%d" % count)
            except BlockingIOError:
                break
            count += 1
        ring.send(tx, b"last record")
        assert ring.wait(0, timeout=0.1) == []          # waits for room
        assert [rx.recv(100) for _ in range(count)] == [b"fill%d" % i for i in range(count)]
        (done,) = ring.wait(1, timeout=5)
        assert done.error is None and done.value == len(b"last record")
        assert rx.recv(100) == b"last record"
