"""FramedStream (API §3): wire format, views that are never overwritten, timeouts that lose
nothing, size limits, end of stream."""
from __future__ import annotations

import gc
import os
import random
import socket as stdlib_socket
import struct
import sys
import textwrap
import threading
import time
import tracemalloc

import pytest

import csock
from csock import _fastio

from .children import script_output
from .pairs import STREAM_FAMILIES, address_of, stream_pair
from .tracing import POLL_NRS, RECVFROM_NR, needs_recvfrom_nr, needs_strace, strace


@pytest.fixture(params=STREAM_FAMILIES)
def pair(request):
    with stream_pair(request.param) as p:
        yield p


def sender_thread(fn, *args):
    t = threading.Thread(target=fn, args=args)
    t.start()
    return t


def test_wire_format_both_ways(pair):
    a, b = pair
    fa = csock.FramedStream(a)
    fa.send_many([b"abc", b"", b"x" * 70_000])            # a large one goes by reference
    raw = b.recv_exactly(4 + 3 + 4 + 4 + 70_000)
    assert (
        raw
        == struct.pack("!I", 3)
        + b"abc"
        + struct.pack("!I", 0)
        + struct.pack("!I", 70_000)
        + b"x" * 70_000
    )
    fb = csock.FramedStream(b)
    a.sendall(struct.pack("!I", 5) + b"hello" + struct.pack("!I", 2) + b"hi")
    assert [bytes(m) for m in fb.recv_many()] == [b"hello", b"hi"]


def test_100k_random_frames_all_views_held(pair):
    a, b = pair
    rng = random.Random(1)
    messages = [rng.randbytes(rng.choice([0, 1, 7, 64, 300, 5000, 20000, 70000]) if i % 97 == 0
                             else rng.randint(0, 100)) for i in range(100_000)]
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    t = sender_thread(
        lambda: [fa.send_many(messages[i : i + 777]) for i in range(0, len(messages), 777)]
    )
    received = []
    while len(received) < len(messages):
        batch = fb.recv_many()
        assert batch
        received.extend(batch)
    t.join()
    assert len(received) == len(messages)
    for got, sent in zip(received, messages, strict=True):
        assert got == sent                  # every view intact after all later receives


def test_views_are_read_only_and_bytes_like(pair):
    a, b = pair
    csock.FramedStream(a).send(b"payload")
    m = csock.FramedStream(b).recv()
    assert isinstance(m, csock.MessageView) and len(m) == 7 and m.readonly
    assert bytes(m) == b"payload" and m == b"payload" and b"payload" == m and m != b"other"
    assert m[0] == ord("p") and m[-1] == ord("d") and bytes(m[1:3]) == b"ay"
    assert memoryview(m).readonly and memoryview(m).tobytes() == b"payload"
    with pytest.raises(TypeError):
        memoryview(m)[0] = 1
    assert struct.unpack_from("!B", m)[0] == ord("p")
    assert hash(m) == hash(b"payload")


def test_arena_outlives_stream_while_views_held(pair):
    a, b = pair
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    fa.send_many([b"first", b"second"])
    held = fb.recv_many()
    del fb
    gc.collect()
    assert held == [b"first", b"second"]


def test_send_single_and_recv_iteration(pair):
    a, b = pair
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    for i in range(10):
        fa.send(i.to_bytes(2, "big"))
    a.shutdown(csock.SHUT_WR)
    assert [int.from_bytes(m, "big") for m in fb] == list(range(10))


def test_recv_many_respects_max_messages(pair):
    a, b = pair
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    fa.send_many([bytes([i]) for i in range(10)])
    time.sleep(0.05)
    first = fb.recv_many(max_messages=3)
    assert first == [b"\x00", b"\x01", b"\x02"]
    rest = []
    while len(rest) < 7:
        rest += fb.recv_many()
    assert rest == [bytes([i]) for i in range(3, 10)]
    with pytest.raises(ValueError):
        fb.recv_many(0)


def test_partial_frame_survives_timeout(pair):
    a, b = pair
    b.settimeout(0.1)
    fb = csock.FramedStream(b)
    frame = struct.pack("!I", 10) + b"0123456789"
    a.sendall(frame[:2])
    with pytest.raises(TimeoutError):
        fb.recv()
    a.sendall(frame[2:9])
    with pytest.raises(TimeoutError):
        fb.recv_many()
    a.sendall(frame[9:])
    assert fb.recv() == b"0123456789"


def test_partial_frame_survives_would_block(pair):
    a, b = pair
    b.setblocking(False)
    fb = csock.FramedStream(b)
    with pytest.raises(BlockingIOError):
        fb.recv()
    a.sendall(struct.pack("!I", 3) + b"a")
    time.sleep(0.02)
    with pytest.raises(BlockingIOError):
        fb.recv_many()
    a.sendall(b"bc")
    time.sleep(0.02)
    assert fb.recv_many() == [b"abc"]


def test_send_non_blocking_accepts_all_or_nothing(pair):
    a, b = pair
    a.setblocking(False)
    fa = csock.FramedStream(a)
    big = [bytes([i % 256]) * 100_000 for i in range(200)]   # 20 MB: far beyond the buffers
    fa.send_many(big)                   # accepted: what the kernel did not take is backlog
    assert fa.pending_send > 0
    with pytest.raises(BlockingIOError):
        fa.send(b"not accepted")        # backlog not flushed yet: nothing of this call taken
    fb = csock.FramedStream(b)
    received = []

    def drain():
        while len(received) < len(big) + 1:
            received.extend(fb.recv_many())

    t = sender_thread(drain)
    while not fa.flush():
        time.sleep(0.001)
    while True:
        try:
            fa.send(b"last")
            break
        except BlockingIOError:
            time.sleep(0.001)
    while not fa.flush():
        time.sleep(0.001)
    t.join()
    assert received[:-1] == big and received[-1] == b"last"


SEND_FAILING_AFTER_PART = textwrap.dedent("""
    import threading
    import csock
    a, b = csock.socketpair()
    a.setblocking(False)                            # the second sendmsg follows the first
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    BIG = bytes(range(256)) * 4096                  # 1 MiB: more than the socket holds
    try:
        fa.send(BIG)
    except ConnectionResetError:
        print("raised", fa.pending_send > 0)
    a.setblocking(True)
    got = []
    reader = threading.Thread(target=lambda: got.extend(bytes(fb.recv()) for _ in range(2)),
                              daemon=True)          # a frame cut short never ends
    reader.start()
    fa.flush()
    fa.send(b"after")
    reader.join(10)
    print(got == [BIG, b"after"])
""")


@needs_strace
def test_a_send_failing_after_part_keeps_the_rest_of_the_frame(tmp_path):
    # The kernel takes part of the frame, then the next sendmsg(2) fails (strace makes it
    # return ECONNRESET): the error is raised, and the frame's rest, kept, goes out first.
    text, out = strace(tmp_path, SEND_FAILING_AFTER_PART, "sendmsg",
                       inject="sendmsg:error=ECONNRESET:when=2")
    assert out.split() == ["raised", "True", "True"], text[-2000:]


def backlog_to_a_peer_gone(a, b):
    """A FramedStream on a (made non-blocking) with a backlog for the peer b, which closes
    with unread data (a reset): that backlog can never be written."""
    a.setblocking(False)
    fa = csock.FramedStream(a)
    fa.send(bytes(4 << 20))                     # accepted: most of it in the backlog
    assert fa.pending_send > 0
    b.close()
    return fa


def test_leaving_a_with_block_on_an_error_keeps_that_error(pair):
    # close() cannot write the backlog (EPIPE/ECONNRESET): that must not replace the error
    # the block raised.
    with pytest.raises(LookupError, match="the block's own"):
        with backlog_to_a_peer_gone(*pair):
            raise LookupError("the block's own")
    assert pair[0].fileno() == -1


def test_close_drops_a_backlog_it_cannot_write_without_raising(pair):
    # As for a socket that is full or a timeout: dropped, the socket closed, no error (a
    # close() in a finally block would replace the error a send raised).
    fa = backlog_to_a_peer_gone(*pair)
    with pytest.raises(OSError):
        for _ in range(100):
            fa.flush()                          # the connection failed: its sends say so
    fa.close()
    assert pair[0].fileno() == -1


def test_take_backlog_hands_over_the_frames_not_sent_in_order(pair):
    # csock.aio's io_uring engine sends from the messages' own buffers, then takes what the
    # kernel did not take and sends it on its ring: sent part + backlog = the frames, whole.
    a, b = pair
    a.setblocking(False)
    fa = csock.FramedStream(a)
    assert fa.take_backlog() == bytearray()
    big = [bytes([i]) * 300_000 for i in range(20)] + [b"small"] * 3   # beyond the buffers
    fa.send_many(big)
    rest = fa.take_backlog()
    assert isinstance(rest, bytearray) and 0 < len(rest) < sum(4 + len(m) for m in big)
    assert fa.pending_send == 0 and fa.take_backlog() == bytearray()
    fb = csock.FramedStream(b)
    received = []
    t = sender_thread(lambda: received.extend(fb.recv() for _ in big))
    a.setblocking(True)
    a.sendall(rest)
    t.join()
    assert received == big


def test_send_timeout_never_cuts_a_frame(pair):
    a, b = pair
    a.settimeout(0.1)
    fa = csock.FramedStream(a)
    payload = b"z" * 300_000
    accepted = 0
    for _ in range(200):
        try:
            fa.send(payload)
            accepted += 1
        except TimeoutError as error:
            accepted += error.accepted          # part went: the rest is kept, not to resend
            break
    else:
        pytest.fail("the socket never filled up")
    fb = csock.FramedStream(b)
    received = []

    def drain():
        while len(received) < accepted:
            received.extend(fb.recv_many())

    t = sender_thread(drain)
    a.settimeout(None)
    assert fa.flush()
    t.join()
    assert len(received) == accepted and all(m == payload for m in received)


SENDS = {
    "send": lambda framed, messages: framed.send(messages[0]),
    "send_many": lambda framed, messages: framed.send_many(messages),
}


@pytest.mark.parametrize("call", SENDS)
@pytest.mark.parametrize("limit", ["settimeout", "SO_SNDTIMEO"])
def test_a_send_cut_by_its_timeout_raises_and_the_next_call_resumes(pair, call, limit):
    """API §0: a send whose frames cannot all be written in the timeout raises (TimeoutError;
    BlockingIOError for a kernel SO_SNDTIMEO), and loses nothing: what the kernel did not
    take stays buffered (.accepted: not to be sent again; .sent: the bytes that went) and
    the next call writes it first, so the peer gets every frame once, whole."""
    a, b = pair
    if limit == "settimeout":
        a.settimeout(0.1)
        expected = TimeoutError
    else:
        a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDTIMEO, struct.pack("@ll", 0, 100_000))
        expected = BlockingIOError
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    big = bytes(range(256)) * 65536                     # 16 MiB: beyond what the socket holds
    messages = [big] if call == "send" else [b"first", big, b"last"]
    total = sum(4 + len(m) for m in messages)
    with pytest.raises(expected) as info:
        SENDS[call](fa, messages)
    assert info.value.accepted is True
    assert 0 < info.value.sent < total
    assert info.value.sent + fa.pending_send == total   # the rest is kept, nothing twice
    received = []
    reader = sender_thread(lambda: received.extend(bytes(fb.recv()) for _ in messages + [0]))
    a.settimeout(None)
    a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDTIMEO, struct.pack("@ll", 0, 0))
    fa.send(b"next")                                    # writes the kept rest first
    reader.join(30)
    assert received == messages + [b"next"]


def test_a_send_that_moved_nothing_says_nothing_was_accepted(pair):
    """A send that times out before any byte of it went accepted none of it: .accepted is
    False, .sent 0, and the caller sends the message again."""
    a, b = pair
    a.setblocking(False)
    fa = csock.FramedStream(a)
    fa.send(bytes(16 << 20))                            # fills the socket, rest backlogged
    a.settimeout(0.05)
    with pytest.raises(TimeoutError) as info:
        fa.send(b"again")                               # the backlog cannot even be written
    assert (info.value.accepted, info.value.sent) == (False, 0)


def test_too_large_frame_raises_without_allocating(pair):
    a, b = pair
    fb = csock.FramedStream(b, max_size=1024)
    a.sendall(struct.pack("!I", 5) + b"small" + struct.pack("!I", 0xFFFFFFF0))
    tracemalloc.start()
    try:
        assert fb.recv_many() == [b"small"]    # what came before is handed over first
        with pytest.raises(csock.FrameTooLargeError) as info:
            fb.recv()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(info.value, ValueError) and "max_size" in str(info.value)
    assert peak < 1 << 20
    with pytest.raises(csock.FrameTooLargeError):
        fb.recv_many()                  # the stream stays unusable for reading


def test_end_of_stream_between_and_inside_frames(pair):
    a, b = pair
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    fa.send(b"one")
    a.shutdown(csock.SHUT_WR)
    assert fb.recv() == b"one"
    with pytest.raises(EOFError):
        fb.recv()
    assert fb.recv_many() == []


def test_end_of_stream_inside_a_frame(pair):
    a, b = pair
    fb = csock.FramedStream(b)
    a.sendall(struct.pack("!I", 4) + b"ab")
    a.shutdown(csock.SHUT_WR)
    with pytest.raises(csock.IncompleteReadError) as info:
        fb.recv_many()
    assert info.value.partial == struct.pack("!I", 4) + b"ab"
    assert fb.recv_many() == []


def test_bad_messages_send_nothing(pair):
    a, b = pair
    fa = csock.FramedStream(a)
    with pytest.raises(TypeError):
        fa.send_many([b"ok", "text", b"ok"])
    with pytest.raises(TypeError):
        fa.send(12)
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(1)


def test_constructor_checks():
    with pytest.raises(TypeError):
        csock.FramedStream(object())
    with csock.socket(csock.AF_INET, csock.SOCK_DGRAM) as udp:
        with pytest.raises(ValueError):
            csock.FramedStream(udp)
    a, b = csock.socketpair()
    with a, b:
        with pytest.raises(ValueError):
            csock.FramedStream(a, max_size=-1)
        with pytest.raises(ValueError, match="between 0 and 4294967295"):    # (it said -1)
            csock.FramedStream(a, max_size=2**32)


def test_stdlib_socket_works_too():
    a, b = stdlib_socket.socketpair()
    with a, b:
        csock.FramedStream(a).send(b"from a stdlib socket")
        assert csock.FramedStream(b).recv() == b"from a stdlib socket"


def test_close_closes_socket_and_context_manager():
    a, b = csock.socketpair()
    with csock.FramedStream(a) as fa:
        fa.send(b"bye")
    assert a.fileno() == -1
    with b:
        assert csock.FramedStream(b).recv() == b"bye"


def test_a_stream_whose_views_are_dropped_reads_into_one_arena():
    """The unparsed tail moves to the front of the same arena when no view refers to it
    (framing.pyx, _make_room): 2.5 MB of frames dropped as they come stay in 256 KiB."""
    a, b = csock.socketpair()
    with a, b:
        fa, fb = csock.FramedStream(a), csock.FramedStream(b)
        payloads = [b"%05d" % i + b"f" * 995 for i in range(2500)]
        t = sender_thread(fa.send_many, payloads)
        addresses = []
        for expected in payloads:
            message = fb.recv()
            assert message == expected
            addresses.append(address_of(message))
            del message
        t.join()
    assert max(addresses) - min(addresses) < 256 * 1024


def test_held_views_keep_arenas_alive_and_dropping_them_frees_memory():
    a, b = csock.socketpair()
    with a, b:
        fa, fb = csock.FramedStream(a), csock.FramedStream(b)
        payload = b"m" * 1000
        t = sender_thread(lambda: [fa.send_many([payload] * 100) for _ in range(100)])
        _fastio._release_warm_arenas()          # every arena below is allocated while traced
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            held = []
            while len(held) < 10_000:
                held.extend(fb.recv_many())
            t.join()
            holding = tracemalloc.get_traced_memory()[0] - base
            assert all(m == payload for m in held)
            del held
            gc.collect()
            assert _fastio._release_warm_arenas() > 0   # freed arenas wait for reuse...
            released = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert holding > 10_000 * 1000          # the arenas behind the views are alive
        assert released < 2 * 256 * 1024 + 100_000   # ...and freed with the views (one arena kept)


def test_a_freed_large_arena_is_reused_by_a_later_large_frame():
    # A large frame's arena is allocated for it alone; freed with its views, it is kept for the
    # next large frame (at most twice as large as that needs), its pages already faulted in.
    _fastio._release_warm_arenas()
    a, b = csock.socketpair()
    with a, b:
        fa, fb = csock.FramedStream(a), csock.FramedStream(b)
        sizes = [1 << 20, (1 << 20) + 1000, 600_000, 700_000]
        t = sender_thread(lambda: fa.send_many([bytes([i]) * n for i, n in enumerate(sizes)]))
        starts = []
        for i, n in enumerate(sizes):
            message = fb.recv()
            assert message == bytes([i]) * n
            starts.append(address_of(message))
            del message                 # its arena is freed when the next frame's replaces it
        t.join()
    # Frame 2 does not fit frame 1's arena; frame 3 takes it (the oldest kept that fits), and
    # frame 4 frame 2's (frame 1's is frame 3's until frame 4's arena replaces it).
    assert starts[2] == starts[0] and starts[3] == starts[1]
    assert _fastio._release_warm_arenas() >= 1


def test_the_large_arenas_kept_are_bounded():
    _fastio._release_warm_arenas()
    arenas = [_fastio.Arena(3 << 20) for _ in range(3)] + [_fastio.Arena(300_000) for _ in range(3)]
    while arenas:
        arenas.pop(0)                   # freed oldest first
    # At most four are kept, of at most 8 MiB together, the oldest dropped to make room: one
    # 3 MiB arena of the three, and the three of 300,000 bytes.
    taken = _fastio.Arena(2 << 20)
    assert len(taken) == 3 << 20        # a kept one, up to twice as large as asked
    assert _fastio._release_warm_arenas() == 3
    del taken
    assert _fastio._release_warm_arenas() == 1
    never = _fastio.Arena(20 << 20)     # larger than all kept together: never kept
    del never
    assert _fastio._release_warm_arenas() == 0
    kept = _fastio.Arena(300_000)
    del kept
    assert len(_fastio.Arena(700_000)) == 700_000    # more than twice as large: a new one
    assert len(_fastio.Arena(200_000)) == 200_000    # not a large arena: none taken
    assert _fastio._release_warm_arenas() == 2       # the 300,000 and 700,000 bytes ones


def test_a_freed_arena_is_reused_by_the_next_stream():
    # Its pages are already faulted in: a server making a stream per connection, or a stream
    # whose views pin its arena, no longer maps and faults in 256 KiB each time.
    def receive_once(keep: list) -> None:
        a, b = csock.socketpair()
        with a, b:
            fa, fb = csock.FramedStream(a), csock.FramedStream(b)
            fa.send(b"first")
            message = fb.recv()
            assert message == b"first"
            keep.append(fb)

    _fastio._release_warm_arenas()
    kept: list = []
    receive_once(kept)
    kept.clear()                                     # its arena is freed: kept for reuse
    assert _fastio._release_warm_arenas() == 1
    receive_once([])
    receive_once(kept)                               # takes the arena the last one freed
    assert _fastio._release_warm_arenas() == 0
    kept.clear()
    assert _fastio._release_warm_arenas() == 1


# --- one stream, several threads (API §1: serialised, never corrupted, lost or duplicated) ---

PER_THREAD = 1500


def numbered_message(writer: int, seq: int) -> bytes:
    """Who sent it and which it is, then a body derived from both (so corruption shows). Every
    50th is above the pack limit (16 KiB), so it goes by reference in its own iovec."""
    size = 20_000 + seq % 1000 if seq % 50 == 7 else (seq * 7919 + writer * 31) % 300
    return struct.pack("!HI", writer, seq) + bytes([(writer * 131 + seq) % 256]) * size


def check_numbered(message) -> tuple[int, int]:
    """(writer, seq) of a message, after checking every byte of it."""
    writer, seq = struct.unpack_from("!HI", message)
    assert bytes(message) == numbered_message(writer, seq), f"message {writer}/{seq} corrupted"
    return writer, seq


class Threads:
    """Start fn(arg) for each arg in its own thread; join() re-raises the first failure."""

    def __init__(self, fn, args):
        self.errors = []
        self.threads = [
            threading.Thread(target=self._run, args=(fn, arg), daemon=True) for arg in args
        ]
        for t in self.threads:
            t.start()

    def _run(self, fn, arg):
        try:
            fn(arg)
        except BaseException as error:      # noqa: B036 - reported by join()
            self.errors.append(error)

    def join(self, timeout=30, check=True):
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive() or not check, "a thread is stuck"
        if self.errors and check:
            raise self.errors[0]


def write_numbered(framed, writer, call):
    mine = [numbered_message(writer, seq) for seq in range(PER_THREAD)]
    if call == "send":
        for message in mine:
            framed.send(message)
    else:
        for i in range(0, len(mine), 7):
            framed.send_many(mine[i:i + 7])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("writers", [2, 4])
@pytest.mark.parametrize("call", ["send", "send_many"])
def test_concurrent_writers_deliver_every_message_once_intact(pair, writers, call):
    a, b = pair
    b.settimeout(10)                        # a lost message fails the test instead of hanging it
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    threads = Threads(lambda writer: write_numbered(fa, writer, call), range(writers))
    received = []
    try:
        while len(received) < writers * PER_THREAD:
            received.extend(fb.recv_many())
    except BaseException:
        a.shutdown(csock.SHUT_RDWR)         # wakes the writers: the reader's error is the story
        threads.join(check=False)
        raise
    threads.join()
    seen = [check_numbered(m) for m in received]
    assert sorted(seen) == [(w, s) for w in range(writers) for s in range(PER_THREAD)]
    for writer in range(writers):           # one thread's calls go out in its order
        assert [s for w, s in seen if w == writer] == list(range(PER_THREAD))
    b.setblocking(False)
    with pytest.raises(BlockingIOError):    # and nothing more than that was sent
        fb.recv()


@pytest.mark.timeout(60)
def test_concurrent_writers_with_timeouts_keep_the_backlog_whole(pair):
    """Sends that time out part-way raise with .accepted and leave the rest in the backlog,
    which the next send (of any thread) writes first; one that timed out before any of it
    went accepted nothing and is sent again. Each message still arrives once, intact, in its
    sender's order."""
    a, b = pair
    a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 4096)
    a.settimeout(0.002)
    b.settimeout(10)
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    timeouts = []

    def write(writer):
        for seq in range(PER_THREAD // 3):
            while True:
                try:
                    fa.send(numbered_message(writer, seq))
                    break
                except TimeoutError as error:
                    timeouts.append(writer)
                    if error.accepted:          # part went, the rest is in the backlog
                        break                   # (else nothing was accepted: again)

    threads = Threads(write, range(3))
    received = []
    try:
        while len(received) < 3 * (PER_THREAD // 3):
            received.extend(fb.recv_many(5))
            if len(received) % 50 < 5:
                time.sleep(0.003)               # a slow reader: the writers time out
    except BaseException:
        a.shutdown(csock.SHUT_RDWR)
        threads.join(check=False)
        raise
    threads.join()
    seen = [check_numbered(m) for m in received]
    for writer in range(3):
        assert [s for w, s in seen if w == writer] == list(range(PER_THREAD // 3))
    assert timeouts                             # the backlog path did run


@pytest.mark.timeout(60)
@pytest.mark.parametrize("readers", [2, 4])
def test_concurrent_readers_share_every_message_once_intact(pair, readers):
    a, b = pair
    a.settimeout(10)
    b.settimeout(10)                        # a lost message fails the test instead of hanging it
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    count = readers * PER_THREAD
    held = [[] for _ in range(readers)]

    def read(reader):
        rng = random.Random(reader)
        while True:
            if rng.random() < 0.5:
                try:
                    batch = [fb.recv()]
                except EOFError:
                    return
            else:
                batch = fb.recv_many(rng.randint(1, 20))
                if not batch:
                    return
            for message in batch:
                check_numbered(message)     # intact when handed over...
            held[reader].extend(batch)

    threads = Threads(read, range(readers))
    try:
        for i in range(0, count, 5):
            fa.send_many([numbered_message(0, seq) for seq in range(i, min(i + 5, count))])
    finally:
        a.shutdown(csock.SHUT_WR)           # end of stream: the readers return
        threads.join()
    seqs = []
    for mine in held:
        got = [check_numbered(m)[1] for m in mine]  # ...and still, after every later receive
        assert got == sorted(got)           # calls are serialised: each reader's are in order
        seqs.extend(got)
    assert sorted(seqs) == list(range(count))


@pytest.mark.timeout(120, method="thread")      # takes SIGALRM, pytest-timeout's own
def test_reentrant_call_from_a_signal_handler_is_refused(pair):
    """A handler that runs while this thread is inside recv() and calls recv() on the same
    stream would wait for itself: it gets a RuntimeError instead."""
    import signal
    a, b = pair
    b.settimeout(2)
    fb = csock.FramedStream(b)
    old = signal.signal(signal.SIGALRM, lambda *_: fb.recv())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)      # while recv() below waits
        with pytest.raises(RuntimeError, match="same thread"):
            fb.recv()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    a.sendall(struct.pack("!I", 2) + b"ok")
    assert fb.recv() == b"ok"               # the lock was released on the way out


def test_a_call_waiting_for_another_threads_call_times_out(pair):
    """A receive that waits for another thread's receive, on a socket with a timeout, raises
    TimeoutError as that one does, and leaves the stream usable."""
    a, b = pair
    b.settimeout(0.2)
    fb = csock.FramedStream(b)
    outcomes = []

    def read(_):
        try:
            fb.recv()
        except TimeoutError:
            outcomes.append("timeout")

    Threads(read, range(3)).join()
    assert outcomes == ["timeout"] * 3
    a.sendall(struct.pack("!I", 3) + b"end")
    assert fb.recv() == b"end"


@needs_recvfrom_nr
def test_init_again_while_a_call_runs_is_refused(pair):
    """__init__ replaces the arena and the backlog: not under a receive that is writing into
    the arena (or a send reading the backlog) in another thread."""
    a, b = pair
    fb = csock.FramedStream(b)
    reader = Threads(lambda _: fb.recv(), [None])
    wait_until_asleep_in_a_receive(reader.threads[0])
    with pytest.raises(RuntimeError, match="running"):
        fb.__init__(b)
    a.sendall(struct.pack("!I", 2) + b"ok")
    reader.join()
    fb.__init__(b)                          # allowed once no call runs


def wait_until_asleep_in_a_receive(thread, timeout=10):
    """Until thread sleeps in recvfrom(2), or in the poll(2) before it (other threads in the
    process: io.pyx), per proc(5)'s /proc/self/task/<tid>/syscall."""
    asleep = {str(RECVFROM_NR), *(str(n) for n in POLL_NRS)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/self/task/{thread.native_id}/syscall") as f:
            if f.read().split()[0] in asleep:
                return
        time.sleep(0.001)
    raise AssertionError("the thread never went to sleep in a receive")


def in_forked_child(fn, timeout=5):
    """Start fn() in a forked child (only this thread goes with it); returns a function that
    waits for the child and gives repr() of fn's result or "raised <error>". The child's own
    SIGALRM ends a call hung for timeout seconds; a child still running at 4 * timeout is
    killed."""
    import signal

    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                # the child
        try:
            def hung(*_):
                raise AssertionError(f"still blocked after {timeout} s")
            signal.signal(signal.SIGALRM, hung)
            signal.alarm(timeout)
            try:
                outcome = repr(fn())
            except BaseException as error:      # noqa: B036 - reported to the parent
                outcome = f"raised {error!r}"
            os.write(report_w, outcome.encode())
        finally:
            os._exit(0)
    os.close(report_w)

    def outcome():
        deadline = time.monotonic() + 4 * timeout
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the forked child never finished")
            time.sleep(0.01)
        with os.fdopen(report_r, "rb") as report:
            return report.read().decode()

    return outcome


def close_all(*things):
    """Close each descriptor (an int) or object with close()."""
    for thing in things:
        if isinstance(thing, int):
            os.close(thing)
        else:
            thing.close()


def wait_until_readable(sock, timeout=10):
    import select
    assert select.select([sock], [], [], timeout)[0], "nothing arrived"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.timeout(60)
def test_a_forked_child_sends_on_a_stream_a_thread_was_sending_on():
    """fork() while a thread is inside send() (blocked: the frame is larger than the socket
    holds). That thread does not exist in the child, so its call holds no lock there: the
    child's send goes out, a whole frame after the parent's."""
    a, b = csock.socketpair()
    a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 4096)
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    big = bytes(range(256)) * 4096                      # 1 MiB
    sender = Threads(lambda _: fa.send(big), [None])
    wait_until_readable(b)                              # the send is under way: it holds the lock
    go_r, go_w = os.pipe()

    def child():
        os.read(go_r, 1)                                # once the parent's send is over
        fa.send(b"from the child")

    outcome = in_forked_child(child)
    try:
        assert fb.recv() == big
        sender.join()
        os.write(go_w, b"!")
        assert outcome() == "None"
        assert fb.recv() == b"from the child"
    finally:
        close_all(go_r, go_w, fa, fb)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@needs_recvfrom_nr
@pytest.mark.timeout(60)
def test_a_forked_child_receives_on_a_stream_a_thread_was_receiving_on():
    """fork() while a thread is asleep inside recv(): in the child that call does not exist,
    so the child's own recv() reads (the next message, whole)."""
    a, b = csock.socketpair()
    fa, fb = csock.FramedStream(a), csock.FramedStream(b)
    got = []
    reader = Threads(lambda _: got.append(bytes(fa.recv())), [None])
    wait_until_asleep_in_a_receive(reader.threads[0])
    go_r, go_w = os.pipe()

    def child():
        os.read(go_r, 1)                                # once the parent's recv is over
        return bytes(fa.recv())

    outcome = in_forked_child(child)
    try:
        fb.send(b"for the parent")
        reader.join()
        assert got == [b"for the parent"]
        fb.send(b"for the child")
        os.write(go_w, b"!")
        assert outcome() == repr(b"for the child")
    finally:
        close_all(go_r, go_w, fa, fb)


# Run in a child: before the fix the read of the emptied list crashed the interpreter.
MESSAGE_EMPTIES_ITS_LIST = """
import sys
import csock
from csock import _fastio
messages = []

class EmptiesTheList:
    def __buffer__(self, flags):
        messages.clear()
        return memoryview(b"abc")

messages.extend([EmptiesTheList()] + [b"x" * 10] * 100)
if sys.argv[1] == "pack_frames":
    print(len(_fastio.pack_frames(messages)))
else:
    a, b = csock.socketpair()
    csock.FramedStream(a).send_many(messages)
    received = csock.FramedStream(b).recv_many()
    print(len(received), bytes(received[0]), bytes(received[-1]))
"""


@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ in Python code is 3.12+")
@pytest.mark.parametrize("call", ["send_many", "pack_frames"])
def test_messages_are_framed_as_they_were_when_called(call, tmp_path):
    """A message's __buffer__ that empties the caller's list must not change what is framed
    (the loop went on reading the freed list: a crash)."""
    expected = {"send_many": ["101 b'abc' b'xxxxxxxxxx'"], "pack_frames": [str(7 + 100 * 14)]}
    assert script_output(tmp_path, MESSAGE_EMPTIES_ITS_LIST, call) == expected[call]
