"""Property tests (hypothesis): FramedStream fed through a socketpair in random chunk sizes,
with random orders of recv / recv_many / timeouts, always yields exactly the messages sent."""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import csock

messages_strategy = st.lists(st.binary(max_size=300), min_size=1, max_size=60)
calls_strategy = st.lists(st.sampled_from(["recv", "recv_many", "recv_many_1", "timeout_probe"]),
                          min_size=1, max_size=20)


def encode(messages: list[bytes]) -> bytes:
    return b"".join(struct.pack("!I", len(m)) + m for m in messages)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=messages_strategy,
       cuts=st.lists(st.integers(min_value=1, max_value=97), max_size=40),
       calls=calls_strategy)
def test_random_chunks_and_calls_yield_exactly_what_was_sent(messages, cuts, calls):
    wire = encode(messages)
    a, b = csock.socketpair()
    with a, b:
        b.settimeout(0.001)
        stream = csock.FramedStream(b)
        received: list[bytes] = []
        position, step = 0, 0
        while len(received) < len(messages):
            if position < len(wire):                        # the peer writes the next chunk
                size = cuts[step % len(cuts)] if cuts else len(wire)
                a.sendall(wire[position:position + size])
                position += size
            call = calls[step % len(calls)]
            step += 1
            try:
                if call == "recv":
                    received.append(bytes(stream.recv()))
                elif call == "recv_many":
                    received.extend(bytes(m) for m in stream.recv_many())
                elif call == "recv_many_1":
                    received.extend(bytes(m) for m in stream.recv_many(1))
                else:
                    b.settimeout(0)                          # a would-block in between
                    received.extend(bytes(m) for m in stream.recv_many())
            except (TimeoutError, BlockingIOError):
                pass
            finally:
                b.settimeout(0.001)
            assert step < 10_000, "no progress"
        assert received == messages
        a.close()
        b.settimeout(1)
        assert stream.recv_many() == []


@settings(max_examples=100, deadline=None)
@given(messages=messages_strategy, batch=st.integers(min_value=1, max_value=17))
def test_send_many_in_batches_matches_the_wire_format(messages, batch):
    a, b = csock.socketpair()
    with a, b:
        stream = csock.FramedStream(a)
        for i in range(0, len(messages), batch):
            stream.send_many(messages[i:i + batch])
        expected = encode(messages)
        assert b.recv_exactly(len(expected)) == expected


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(min_size=0, max_size=200), max_size=st.integers(min_value=0, max_value=64))
def test_garbage_raises_only_documented_errors(garbage, max_size):
    a, b = csock.socketpair()
    with a, b:
        a.sendall(garbage)
        a.shutdown(csock.SHUT_WR)
        stream = csock.FramedStream(b, max_size=max_size)
        total = 0
        try:
            while True:
                batch = stream.recv_many()
                if not batch:
                    break
                total += sum(4 + len(m) for m in batch)
                assert all(len(m) <= max_size for m in batch)
        except csock.IncompleteReadError as e:
            assert garbage.endswith(e.partial) and total + len(e.partial) == len(garbage)
        except csock.FrameTooLargeError:
            pass
        else:
            assert total == len(garbage)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.sampled_from([0, 1, 300, 70_000, 300_000, 600_000]), min_size=1,
                      max_size=6),
       cut=st.integers(min_value=1, max_value=40_000), keep=st.booleans())
def test_feeding_pieces_yields_each_message_whole_and_views_stay_valid(sizes, cut, keep):
    # feed() is how csock.aio's io_uring engine parses: frames larger than the arena and
    # split over many arrivals, with earlier views still held (or not) while it grows.
    messages = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    wire = encode(messages)
    a, b = csock.socketpair()
    with a, b:
        parser = csock._fastio.FramedStream(b, max_size=1 << 20)
        views: list = []
        copies: list[bytes] = []
        for start in range(0, len(wire), cut):
            for view in parser.feed(wire[start:start + cut]):
                copies.append(bytes(view))
                if keep:
                    views.append(view)
        assert copies == messages
        assert [bytes(v) for v in views] == (messages if keep else [])
        assert parser.feed(b"") == [] and parser.buffered == 0
