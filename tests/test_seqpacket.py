"""SeqPacketSocket (API §5): AF_UNIX SOCK_SEQPACKET batches and SPP record headers."""
from __future__ import annotations

import os
import socket as stdlib_socket
import struct
import threading
import time

import pytest

import csock
from csock import SPPHeader

from .pairs import fd_count

SPP = struct.Struct("!BBHHHHH")   # the 12-byte header as a stdlib peer writes it by hand


@pytest.fixture
def pair():
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    with a, b:
        yield a, b


def bound_pair(address):
    server = csock.socket(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    server.bind(address)
    server.listen()
    client = csock.socket(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    client.connect(address)
    conn, _ = server.accept()
    server.close()
    return client, conn


def test_types(pair):
    a, b = pair
    assert type(a) is csock.SeqPacketSocket and type(b) is csock.SeqPacketSocket
    with csock.SeqPacketSocket() as s:
        assert (s.family, s.type) == (csock.AF_UNIX, csock.SOCK_SEQPACKET)


@pytest.mark.parametrize("count", [1, 1024, 5000])
def test_batches_keep_boundaries_and_order(pair, count):
    a, b = pair
    records = [os.urandom(i % 300 + 1) for i in range(count)]
    got = []

    def drain():
        while len(got) < count:
            got.extend(bytes(d.data) for d in b.recv_batch(max_messages=1024))

    reader = threading.Thread(target=drain)
    reader.start()
    assert a.send_batch(records) == count
    reader.join(30)
    assert got == records


@pytest.mark.parametrize("where", ["path", "abstract"])
def test_path_and_abstract_addresses(tmp_path, where):
    address = (
        str(tmp_path / "sp.sock")
        if where == "path"
        else b"\0csock-sp-" + os.urandom(4).hex().encode()
    )
    client, conn = bound_pair(address)
    with client, conn:
        assert type(conn) is csock.SeqPacketSocket
        client.send_batch([b"alpha", b"beta"])
        assert [(bytes(d.data), d.address) for d in conn.recv_batch()] == [
            (b"alpha", None),
            (b"beta", None),
        ]
        conn.send_batch([b"reply", b"again"])
        # the server's records come from the bound address, but a SEQPACKET socket is
        # connected: recv_batch gives address None (API section 5), as for the unbound client
        assert [(bytes(d.data), d.address) for d in client.recv_batch()] == [
            (b"reply", None),
            (b"again", None),
        ]


def test_truncation_is_flagged(pair):
    a, b = pair
    a.send_batch([b"y" * 50, b"ok"])
    got = []
    while len(got) < 2:
        got.extend(b.recv_batch(bufsize=8))
    assert [(bytes(d.data), d.truncated) for d in got] == [(b"y" * 8, True), (b"ok", False)]


def test_end_of_stream(pair):
    a, b = pair
    a.send_batch([b"last"])
    a.shutdown(csock.SHUT_WR)
    assert [bytes(d.data) for d in b.recv_batch()] == [b"last"]
    assert b.recv_batch() == []
    assert b.recv(10) == b""
    with pytest.raises(EOFError):
        b.recv_record()


# --- zero-length records: an empty Datagram, not the end of stream ---------------------------
# recv(2) returns 0 both for an empty record and at end of stream; csock tells them apart with
# the peer's shutdown state (POLLRDHUP) and, once the peer has shut down, a peek at what follows.

def test_zero_length_records_are_empty_datagrams(pair):
    a, b = pair
    a.send_batch([b"a", b"", b"c", b""])
    assert [bytes(d.data) for d in b.recv_batch()] == [b"a", b"", b"c", b""]
    a.send(b"")
    assert [bytes(d.data) for d in b.recv_batch()] == [b""]
    a.send_batch([b"later", b"more"])                  # the stream goes on: nothing was an end
    assert [bytes(d.data) for d in b.recv_batch()] == [b"later", b"more"]


def test_zero_length_record_filling_a_batch_is_a_record(pair):
    a, b = pair
    a.send_batch([b"", b"", b"x"])
    assert [bytes(d.data) for d in b.recv_batch(max_messages=1)] == [b""]
    assert [bytes(d.data) for d in b.recv_batch(max_messages=1)] == [b""]
    assert [bytes(d.data) for d in b.recv_batch(max_messages=1)] == [b"x"]


def test_zero_length_records_before_the_peers_close_then_end_of_stream(pair):
    a, b = pair
    a.send_batch([b"", b"x", b"", b"y"])
    a.shutdown(csock.SHUT_WR)
    assert [bytes(d.data) for d in b.recv_batch(max_messages=1)] == [b""]   # data follows it
    assert [bytes(d.data) for d in b.recv_batch()] == [b"x", b"", b"y"]
    assert b.recv_batch() == []
    assert b.recv_batch() == []


def test_zero_length_record_right_before_the_peers_close_reads_as_end_of_stream(pair):
    """The one ambiguous case (documented): after the peer's shutdown, an empty record with
    nothing but empty records after it cannot be told from the end of stream."""
    a, b = pair
    a.send_batch([b"x", b""])
    a.shutdown(csock.SHUT_WR)
    assert [bytes(d.data) for d in b.recv_batch()] == [b"x"]
    assert b.recv_batch() == []


def test_recv_batch_into_zero_length_records(pair):
    a, b = pair
    buf = bytearray(16 * 8)
    a.send_batch([b"a", b"", b"bc", b""])
    assert b.recv_batch_into(buf, 16) == [1, 0, 2, 0]
    assert bytes(buf[32:34]) == b"bc"
    a.send_batch([b"", b"z"])
    assert b.recv_batch_into(buf, 16, max_messages=1) == [0]
    a.shutdown(csock.SHUT_WR)
    assert b.recv_batch_into(buf, 16) == [1] and buf[0:1] == b"z"
    assert b.recv_batch_into(buf, 16) == []


def test_a_record_longer_than_bufsize_is_never_cut_silently(pair):
    """The kernel keeps bufsize bytes of a longer record and drops the rest: recv_record and
    recv_records say so (TruncatedRecordError, the batch in it with the record cut), as
    recv_batch's Datagram.truncated does; they returned the cut record as a whole one."""
    a, b = pair
    a.send_record(b"x" * 100)
    with pytest.raises(csock.TruncatedRecordError) as info:
        b.recv_record(bufsize=50)
    [(header, data)] = info.value.records
    assert (header.sequence, bytes(data)) == (0, b"x" * 38)
    a.send_record(b"z" * 100)
    with pytest.raises(csock.TruncatedRecordError) as info:
        b.recv_record(bufsize=8)                 # cut inside its header: cut, not malformed
    assert [(h, bytes(d)) for h, d in info.value.records] == [(None, b"\0\0\0\0\0\0\0\1")]
    a.send_records([b"r1", b"y" * 100_000])
    with pytest.raises(csock.TruncatedRecordError) as info:
        b.recv_records()
    assert [(h.sequence, bytes(d[:2]), len(d)) for h, d in info.value.records] == [
        (2, b"r1", 2), (3, b"yy", 65535 - 12)]
    a.send_record(b"r4")
    header, data = b.recv_record()
    assert (header.sequence, bytes(data)) == (4, b"r4")  # the cut records counted


def test_zero_length_record_is_malformed_for_recv_record_not_eof(pair):
    a, b = pair
    a.send(b"")
    with pytest.raises(csock.MalformedRecordError) as info:
        b.recv_record()
    assert [(h, bytes(d)) for h, d in info.value.records] == [(None, b"")]
    a.send_record(b"after")
    assert bytes(b.recv_record()[1]) == b"after"


def test_plain_recv_keeps_the_stdlib_behaviour_for_empty_records(pair):
    a, b = pair
    a.send(b"")
    assert b.recv(10) == b""                           # as the stdlib: b"" for both
    a.send(b"next")
    assert b.recv(10) == b"next"


def test_recv_batch_bufsize_zero_is_a_value_error_and_loses_nothing(pair):
    a, b = pair
    a.send_batch([b"kept", b"too"])
    with pytest.raises(ValueError):
        b.recv_batch(bufsize=0)
    with pytest.raises(ValueError):
        b.recv_records(bufsize=0)
    assert [bytes(d.data) for d in b.recv_batch()] == [b"kept", b"too"]


def test_recv_batch_into_records_then_end_of_stream(pair):
    a, b = pair
    records = [b"%04d" % i * (1 + i % 5) for i in range(100)]
    a.send_batch(records)
    a.shutdown(csock.SHUT_WR)
    buf = bytearray(20 * 32)
    got = []
    while lengths := b.recv_batch_into(buf, 20):
        got += [bytes(buf[i * 20:i * 20 + n]) for i, n in enumerate(lengths)]
    assert got == records                           # in order, boundaries kept, then []
    assert b.recv_batch_into(buf, 20) == []


def test_timeout_and_non_blocking(pair):
    a, b = pair
    b.settimeout(0.05)
    with pytest.raises(TimeoutError):
        b.recv_batch()
    with pytest.raises(TimeoutError):
        b.recv_record()
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv_records()


def test_sctp_unavailable_is_a_clear_error():
    try:
        s = csock.socket(csock.AF_INET, csock.SOCK_SEQPACKET, csock.IPPROTO_SCTP)
    except OSError as error:
        assert "SCTP" in str(error)
        pytest.skip(f"SCTP is unavailable here: {error}")
    with s:
        assert type(s) is csock.SeqPacketSocket


# --- SPP headers ----------------------------------------------------------------------------

def test_header_fields_and_wire_format():
    h = SPPHeader(connection_control=csock.SP_SA | csock.SP_EM, datastream_type=3,
                  source_connection=0x1234, destination_connection=0xBEEF, sequence=7,
                  acknowledge=6, allocation=9)
    assert h.pack() == SPP.pack(0x50, 3, 0x1234, 0xBEEF, 7, 6, 9)
    assert SPPHeader.unpack(h.pack()) == h
    assert (csock.SP_SP, csock.SP_SA, csock.SP_OB, csock.SP_EM) == (0x80, 0x40, 0x20, 0x10)


@pytest.mark.parametrize("field,bad", [("connection_control", 256), ("datastream_type", -1),
                                       ("source_connection", 0x10000), ("sequence", 70000),
                                       ("acknowledge", -5), ("allocation", 1 << 40)])
def test_out_of_range_fields_raise_value_error(field, bad):
    with pytest.raises(ValueError):
        SPPHeader(**{field: bad})
    with pytest.raises(TypeError):
        SPPHeader(**{field: "1"})


def test_unpack_takes_any_contiguous_buffer_and_refuses_a_strided_one():
    raw = SPP.pack(0x50, 3, 0x1234, 0xBEEF, 7, 6, 9) + b"payload"
    expected = SPPHeader.unpack(raw)
    for contiguous in (bytearray(raw), memoryview(raw), memoryview(raw)[:12]):
        assert SPPHeader.unpack(contiguous) == expected
    # a reversed or strided view is not one run of bytes: reading it from its first element
    # would run past the end of the buffer (the stdlib's send refuses it the same way)
    for strided in (memoryview(raw)[::-1], memoryview(raw * 2)[::2]):
        with pytest.raises(BufferError):
            SPPHeader.unpack(strided)
    with pytest.raises(TypeError):
        SPPHeader.unpack("not bytes")


def test_default_header_numbered_by_the_socket(pair):
    a, b = pair
    a.default_header = SPPHeader(source_connection=1, destination_connection=2, datastream_type=5)
    for i in range(3):
        a.send_record(b"r%d" % i)
    got = b.recv_records()
    assert [(h.sequence, h.source_connection, h.destination_connection, h.datastream_type, bytes(d))
            for h, d in got] == [(0, 1, 2, 5, b"r0"), (1, 1, 2, 5, b"r1"), (2, 1, 2, 5, b"r2")]


def test_prototype_header_per_record_overrides_default(pair):
    a, b = pair
    a.default_header = SPPHeader(datastream_type=1)
    a.send_record(b"plain")
    a.send_record(b"urgent", header=SPPHeader(connection_control=csock.SP_OB, datastream_type=9))
    a.send_record(b"plain again")
    got = [b.recv_record() for _ in range(3)]
    assert [(h.connection_control, h.datastream_type, h.sequence, bytes(d)) for h, d in got] == [
        (0, 1, 0, b"plain"), (csock.SP_OB, 9, 1, b"urgent"), (0, 1, 2, b"plain again")]


def test_batch_records_are_numbered_consecutively_and_wrap(pair):
    a, b = pair
    a.send_records([b"x", b"y", b"z"], header=SPPHeader(sequence=0xFFFE))
    got = b.recv_records()
    assert [(h.sequence, bytes(d)) for h, d in got] == [(0xFFFE, b"x"), (0xFFFF, b"y"), (0, b"z")]
    a.send_record(b"next")
    assert b.recv_record()[0].sequence == 1


def test_gap_raises_sequence_error_with_the_data_and_resynchronises(pair):
    a, b = pair
    a.send_record(b"zero")
    a.send_record(b"jump", header=SPPHeader(sequence=5))
    a.send_record(b"six")
    assert bytes(b.recv_record()[1]) == b"zero"
    with pytest.raises(csock.SequenceError) as info:
        b.recv_record()
    assert (
        info.value.expected == 1
        and info.value.header.sequence == 5
        and bytes(info.value.data) == b"jump"
    )
    header, data = b.recv_record()                   # resynchronised on 5: 6 is fine
    assert (header.sequence, bytes(data)) == (6, b"six")


def test_gap_inside_a_batch_hands_over_the_whole_batch(pair):
    a, b = pair
    a.send_records([b"a", b"b"])
    a.send_records([b"c", b"d"], header=SPPHeader(sequence=10))
    with pytest.raises(csock.SequenceError) as info:
        while True:
            b.recv_records()
    records = info.value.records
    assert [bytes(d) for _, d in records][-2:] == [b"c", b"d"]


def test_record_shorter_than_a_header_is_malformed_and_kept(pair):
    a, b = pair
    a.send(b"tiny")
    with pytest.raises(csock.MalformedRecordError) as info:
        b.recv_record()
    assert [(h, bytes(d)) for h, d in info.value.records] == [(None, b"tiny")]


def test_records_of_a_malformed_batch_are_counted(pair):
    """The well-formed records handed over with a MalformedRecordError count: the next record
    in order is not a gap."""
    a, b = pair
    a.send_record(b"r0")
    assert b.recv_record()[0].sequence == 0
    a.send_records([b"r1", b"r2"])
    a.send(b"tiny")
    a.send_record(b"r3")
    with pytest.raises(csock.MalformedRecordError) as info:
        b.recv_records()
    assert [(h and h.sequence, bytes(d)) for h, d in info.value.records] == [
        (1, b"r1"), (2, b"r2"), (None, b"tiny"), (3, b"r3")]
    a.send_record(b"r4")
    header, data = b.recv_record()
    assert (header.sequence, bytes(data)) == (4, b"r4")


def test_records_before_a_malformed_one_in_a_single_record_call_are_counted(pair):
    a, b = pair
    a.send_record(b"r0")
    a.send(b"bad")
    a.send_record(b"r1")
    assert b.recv_record()[0].sequence == 0
    with pytest.raises(csock.MalformedRecordError):
        b.recv_record()
    assert b.recv_record()[0].sequence == 1


@pytest.mark.parametrize("call", [
    lambda a: a.send_record(b"x", header="x"),
    lambda a: a.send_record(b"x", header=5),
    lambda a: a.send_record(b"x", header=b"\0" * 12),
    lambda a: a.send_records([b"x"], header="x"),
    lambda a: a.send_records([b"x"], header=SPPHeader().pack()),
    lambda a: a.send_records(5),
    lambda a: a.send_records([b"x", "text"]),
    lambda a: a.send_record("text"),
    lambda a: a.send_record(12),
    lambda a: a.send_record(None),
    lambda a: setattr(a, "default_header", "x"),
    lambda a: setattr(a, "default_header", {"sequence": 1}),
], ids=["record-str", "record-int", "record-bytes", "records-str", "records-packed", "records-int",
        "records-item-str", "data-str", "data-int", "data-none", "default-str", "default-dict"])
def test_wrong_argument_types_raise_type_error_and_send_nothing(pair, call):
    a, b = pair
    with pytest.raises(TypeError):
        call(a)
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv_batch()                                   # nothing went out
    a.send_record(b"ok")                                 # numbering was not advanced
    assert [(h.sequence, bytes(d)) for h, d in b.recv_records()] == [(0, b"ok")]


class Interrupted(Exception):
    pass


def interrupt_once_full(main, peer):
    """In a thread: once records reach peer and the sender's queue has filled, SIGALRM to the
    sending (main) thread, whose sendmmsg(2) then stops (EINTR or a partial count)."""
    import select
    import signal
    select.select([peer], [], [], 10)
    time.sleep(0.1)
    signal.pthread_kill(main, signal.SIGALRM)


# takes SIGALRM (pytest-timeout's own method): timed by a watchdog thread instead
@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("cut", ["timeout", "kernel timeout", "signal"])
def test_records_that_went_out_before_an_error_are_counted(cut):
    """send_records that an error ends after k records went out (its timeout: TimeoutError,
    a kernel send timeout: BlockingIOError, a signal handler's exception) numbers the next
    record k: the peer, which received 0 .. k-1, sees no gap."""
    import signal

    def handler(signum, frame):
        raise Interrupted

    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    old = signal.signal(signal.SIGALRM, handler)
    interrupter = None
    try:
        if cut == "timeout":
            a.settimeout(0.05)
            error = TimeoutError
        elif cut == "kernel timeout":
            a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDTIMEO, struct.pack("@ll", 0, 50_000))
            error = BlockingIOError
        else:
            interrupter = threading.Thread(target=interrupt_once_full,
                                           args=(threading.get_ident(), b))
            interrupter.start()
            error = Interrupted
        with pytest.raises(error):
            a.send_records([b"x" * 100] * 20_000)       # the queue fills long before the end
        b.setblocking(False)
        received = []
        while True:
            try:
                received += b.recv_records(1024)
            except BlockingIOError:
                break
        assert received and [h.sequence for h, _ in received] == list(range(len(received)))
        a.settimeout(5)
        a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDTIMEO, struct.pack("@ll", 0, 0))
        a.send_record(b"next")
        b.settimeout(5)
        header, data = b.recv_record()
        assert (header.sequence, bytes(data)) == (len(received), b"next")
    finally:
        if interrupter is not None:
            interrupter.join(15)
        signal.signal(signal.SIGALRM, old)
        a.close()
        b.close()


@pytest.mark.parametrize("call", [
    lambda b: b.recv_record(bufsize="100"),
    lambda b: b.recv_record(bufsize=None),
    lambda b: b.recv_records(max_messages="5"),
    lambda b: b.recv_records(max_messages=2.0),
    lambda b: b.recv_records(bufsize=[1]),
], ids=["record-bufsize-str", "record-bufsize-none", "records-max-str", "records-max-float",
        "records-bufsize-list"])
def test_wrong_receive_argument_types_raise_type_error_and_lose_nothing(pair, call):
    a, b = pair
    a.send_record(b"kept")
    with pytest.raises(TypeError):
        call(b)
    assert bytes(b.recv_record()[1]) == b"kept"


def test_default_header_accepts_a_header_or_none(pair):
    a, b = pair
    a.default_header = SPPHeader(datastream_type=7)
    assert a.default_header == SPPHeader(datastream_type=7)
    a.send_record(b"typed")
    a.default_header = None
    a.send_record(b"plain")
    assert [(h.datastream_type, bytes(d)) for h, d in b.recv_records()] == [
        (7, b"typed"),
        (0, b"plain"),
    ]


def test_stdlib_peer_writes_and_reads_headers_by_hand():
    raw, ours = stdlib_socket.socketpair(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_SEQPACKET)
    ours = csock.socket(fileno=ours.detach())
    with raw, ours:
        raw.send(SPP.pack(csock.SP_EM, 4, 10, 20, 0, 0, 8) + b"hand-made")
        header, data = ours.recv_record()
        assert (header.connection_control, header.datastream_type, header.source_connection,
                header.destination_connection, header.sequence, header.allocation, bytes(data)) == (
                    csock.SP_EM, 4, 10, 20, 0, 8, b"hand-made")
        ours.send_record(b"answer",
                         header=SPPHeader(source_connection=20, destination_connection=10))
        record = raw.recv(100)
        assert SPP.unpack(record[:12]) == (0, 0, 20, 10, 0, 0, 0) and record[12:] == b"answer"


def test_views_held_across_batches_stay_intact(pair):
    a, b = pair
    held = []
    for round_ in range(40):
        payloads = [bytes([round_]) * (i + 1) for i in range(16)]
        a.send_records(payloads)
        got = []
        while len(got) < 16:
            got.extend(b.recv_records())
        held.append((payloads, got))
    for payloads, got in held:
        assert [bytes(d) for _, d in got] == payloads


def test_record_calls_need_a_csock_socket_and_lose_nothing():
    """The record paths keep their numbering in the csock socket's state: given a stdlib socket
    (through the private functions), they refuse it before sending or receiving anything."""
    from csock import _fastio
    plain, peer = stdlib_socket.socketpair(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_SEQPACKET)
    with plain, peer:
        for call in (lambda: _fastio.send_record(plain, b"x"),
                     lambda: _fastio.send_records(plain, [b"x"])):
            with pytest.raises(TypeError, match="csock socket"):
                call()
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(100)                               # nothing went out
        peer.send(SPP.pack(0, 0, 0, 0, 3, 0, 0) + b"queued")
        for call in (lambda: _fastio.recv_record(plain), lambda: _fastio.recv_records(plain)):
            with pytest.raises(TypeError, match="csock socket"):
                call()
        assert plain.recv(100)[12:] == b"queued"         # still there


def test_a_default_header_stored_behind_the_setters_back_is_a_type_error(pair):
    a, b = pair
    csock._fastio.socket_state(a).spp_default_header = b"\0" * 12     # (private: no check)
    with pytest.raises(TypeError, match="default_header"):
        a.send_record(b"x")
    a.default_header = None
    a.send_record(b"ok")                                 # nothing went out before, nor counted
    assert [(h.sequence, bytes(d)) for h, d in b.recv_records()] == [(0, b"ok")]


def test_the_first_record_received_may_carry_any_number(pair):
    a, b = pair
    a.send_records([b"first", b"second"], header=SPPHeader(sequence=500))
    assert [(h.sequence, bytes(d)) for h, d in b.recv_records()] == [
        (500, b"first"), (501, b"second")]
    assert csock._fastio.socket_state(b).spp_expected == 502
    a.send_record(b"third")
    assert b.recv_record()[0].sequence == 502


@pytest.mark.parametrize("max_messages", [1, 2])
def test_a_zero_length_record_followed_by_more_records_is_not_the_end(max_messages):
    """Empty records, then a record, then the peer's close: a batch that ends on an empty
    record while the peer has shut down is the end of stream only when no record is queued
    next, empty ones included (a peek for its receive timestamp tells them apart)."""
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    with a, b:
        b.settimeout(5)
        for record in (b"", b"", b"z"):
            a.send(record)
        a.close()
        got = []
        while batch := b.recv_batch(max_messages=max_messages):
            got += [bytes(d.data) for d in batch]
        assert got == [b"", b"", b"z"]
        assert b.getsockopt(csock.SOL_SOCKET, 35) == 0     # SO_TIMESTAMPNS: off, as it was


@pytest.mark.parametrize("next_record", [b"with-fd", b""])
def test_the_peek_at_the_record_after_a_batch_installs_no_passed_descriptors(next_record):
    """The peek that tells a zero-length record from the end of stream reads no descriptors
    the next record carries (the kernel installs them into the process on a peek too, when
    the control buffer has room): recv_fds then takes them, and nothing else stays open."""
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    with a:
        a.settimeout(5)
        with b, open(__file__, "rb") as passed:
            b.send(b"a")
            b.send(b"")                             # the batch ends on a zero-length record
            stdlib_socket.send_fds(b, [next_record], [passed.fileno()])
        before = fd_count()
        assert [bytes(d.data) for d in a.recv_batch(max_messages=2)] == [b"a", b""]  # peeks
        assert fd_count() == before
        record, fds, _, _ = stdlib_socket.recv_fds(a, 100, 4)
        assert record == next_record and len(fds) == 1
        os.close(fds[0])
        assert fd_count() == before


# the asm-generic numbers (x86, arm): the stdlib names only some of them
TIMESTAMP_OPTIONS = {"SO_TIMESTAMP": 29, "SO_TIMESTAMPNS": 35, "SO_TIMESTAMPING": 37,
                     "SO_TIMESTAMP_NEW": 63, "SO_TIMESTAMPNS_NEW": 64, "SO_TIMESTAMPING_NEW": 65}


def timestamp_options(sock):
    """Every receive-timestamp option as getsockopt reads it (None: this kernel has no such
    option); each _NEW/_OLD variant reads set only when it is the one the program chose."""
    values = {}
    for name, option in TIMESTAMP_OPTIONS.items():
        try:
            values[name] = sock.getsockopt(csock.SOL_SOCKET, option, 8)
        except OSError:
            values[name] = None
    return values


@pytest.mark.parametrize("program_set", [
    {}, {"SO_TIMESTAMP": 1}, {"SO_TIMESTAMPNS": 1}, {"SO_TIMESTAMP_NEW": 1},
    {"SO_TIMESTAMPNS_NEW": 1}, {"SO_TIMESTAMPING": 0x18}, {"SO_TIMESTAMPING_NEW": 0x18},
    {"SO_TIMESTAMP": 1, "SO_TIMESTAMPING_NEW": 0x18}])
def test_the_peek_leaves_the_programs_timestamp_options_as_they_were(program_set):
    """Whatever receive timestamps the program asked for (the microsecond or nanosecond form,
    in either time format, SO_TIMESTAMPING's flags), the peek that follows a batch ending on
    an empty record tells an empty record from the end of stream and leaves every option
    reading as before (turning SO_TIMESTAMPNS off turned the program's SO_TIMESTAMP off)."""
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    with a, b:
        b.settimeout(5)
        for name, value in program_set.items():
            try:
                b.setsockopt(csock.SOL_SOCKET, TIMESTAMP_OPTIONS[name], value)
            except OSError:
                pytest.skip(f"this kernel has no {name}")
        before = timestamp_options(b)
        for record in (b"a", b"", b"", b"z"):
            a.send(record)
        a.shutdown(csock.SHUT_WR)
        assert [bytes(d.data) for d in b.recv_batch(max_messages=2)] == [b"a", b""]  # peeks
        assert timestamp_options(b) == before
        assert [bytes(d.data) for d in b.recv_batch(max_messages=2)] == [b"", b"z"]
        assert b.recv_batch() == []


def test_records_sent_from_several_threads_at_once_are_numbered_in_wire_order():
    """The socket numbers records: two threads sending at once, one a batch the full socket
    holds up, the other single records, took numbers from the same point and interleaved on
    the wire (the peer raised SequenceError). Record senders take turns on the socket."""
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    received: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        b.settimeout(10)
        try:
            while len(received) < 2 * 300:
                received.extend(header.sequence for header, _ in b.recv_records())
        except BaseException as error:      # noqa: BLE001 - the outcome is the assertion
            errors.append(error)

    with a, b:
        senders = [threading.Thread(target=a.send_records, args=([b"r" * 2048] * 300,)),
                   threading.Thread(target=lambda: [a.send_record(b"s" * 2048)
                                                    for _ in range(300)])]
        for sender in senders:
            sender.start()
        time.sleep(0.2)                     # both under way, the socket full
        reader = threading.Thread(target=read)
        reader.start()
        for thread in (*senders, reader):
            thread.join(20)
        assert not errors and received == list(range(600))


def test_records_received_by_several_threads_at_once_raise_no_false_gap():
    """Two threads receiving records: the numbers were checked in the order the threads got
    the GIL back after recvmmsg(2), not the order the kernel handed the records out, and
    nothing missing raised SequenceError ("numbered 20, expected 36"). Record receivers take
    turns on the socket: every record comes once, none is called missing."""
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    count = 20_000
    taken: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def read(mine: list[int]) -> None:
        while True:
            try:
                records = b.recv_records(max_messages=4)
            except csock.seqpacket.SequenceError as error:
                errors.append(error)
                records = error.records             # (every record is handed over)
            except OSError as error:
                errors.append(error)
                return
            if not records:
                return
            mine.extend(header.sequence for header, _ in records)

    with a, b:
        a.settimeout(10)
        b.settimeout(10)
        readers = [threading.Thread(target=read, args=(mine,)) for mine in taken]
        for reader in readers:
            reader.start()
        for _ in range(0, count, 500):
            a.send_records([b"x"] * 500)
        a.shutdown(csock.SHUT_WR)
        for reader in readers:
            reader.join(30)
        assert [str(error) for error in errors[:3]] == []
        assert sorted(taken[0] + taken[1]) == list(range(count))    # (no wrap at 20,000)
        for mine in taken:                      # each thread's share in wire order
            assert mine == sorted(mine)

