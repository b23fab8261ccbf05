"""Property tests (hypothesis): SPP records through a SEQPACKET socketpair, sent in random
batches with random headers, read back with random orders of recv_record / recv_records /
timeouts, always yield exactly the records sent, numbered in order; garbage headers raise only
the documented errors."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import csock
from csock import SPPHeader

records_strategy = st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=60)
splits_strategy = st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=30)
calls_strategy = st.lists(st.sampled_from(["one", "many", "many_2", "timeout_probe"]),
                          min_size=1, max_size=25)
headers_strategy = st.builds(SPPHeader, connection_control=st.integers(0, 255),
                             datastream_type=st.integers(0, 255),
                             source_connection=st.integers(0, 0xFFFF),
                             destination_connection=st.integers(0, 0xFFFF),
                             acknowledge=st.integers(0, 0xFFFF), allocation=st.integers(0, 0xFFFF))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=records_strategy, splits=splits_strategy, calls=calls_strategy,
       header=headers_strategy,
       first=st.integers(0, 0xFFFF))
def test_random_batches_and_calls_yield_every_record_in_order(
    records, splits, calls, header, first
):
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 1 << 20)
    with a, b:
        a.default_header = header.replace(sequence=first)
        sent, i = 0, 0
        while sent < len(records):                  # batches of random sizes, numbered on
            size = splits[i % len(splits)]
            i += 1
            batch = records[sent:sent + size]
            if len(batch) == 1:
                a.send_record(batch[0]) if sent else a.send_record(
                    batch[0], header=a.default_header
                )
            else:
                a.send_records(batch) if sent else a.send_records(batch, header=a.default_header)
            if sent == 0:
                a.default_header = header             # later records: numbered by the socket
            sent += len(batch)
        a.shutdown(csock.SHUT_WR)
        got = []
        b.settimeout(5)
        k = 0
        while True:
            call = calls[k % len(calls)]
            k += 1
            if call == "timeout_probe" and len(got) == len(records):
                b.settimeout(0.01)
                assert b.recv_records() == []       # end of stream, not a timeout
                break
            if call == "one":
                try:
                    got.append(b.recv_record())
                except EOFError:
                    break
            else:
                batch = b.recv_records(max_messages=2 if call == "many_2" else 64)
                if not batch:
                    break
                got.extend(batch)
        assert [bytes(data) for _, data in got] == records
        assert [h.sequence for h, _ in got] == [(first + n) & 0xFFFF for n in range(len(records))]
        assert all((h.connection_control, h.datastream_type, h.source_connection,
                    h.destination_connection,
                    h.acknowledge, h.allocation) == (header.connection_control,
                                                     header.datastream_type,
                                                     header.source_connection,
                                                     header.destination_connection,
                                                     header.acknowledge, header.allocation)
                   for h, _ in got)


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=40))
def test_garbage_headers_raise_only_value_error(garbage):
    try:
        header = SPPHeader.unpack(garbage)
    except ValueError:
        assert len(garbage) < 12
        return
    assert header.pack() == bytes(garbage[:12])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.lists(st.binary(max_size=30), min_size=1, max_size=20))
def test_garbage_records_are_handed_over_never_lost(garbage):
    """Records a stdlib peer writes by hand: too short ones (zero-length ones included) raise
    MalformedRecordError with the batch, others come back as (header, data); either way every
    byte is accounted for."""
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    with a, b:
        for r in garbage:
            a.send(r)
        # the documented ambiguity: zero-length records right before the peer's shutdown
        # read as the end of stream
        records = list(garbage)
        while records and not records[-1]:
            records.pop()
        a.shutdown(csock.SHUT_WR)
        seen = []
        while True:
            try:
                batch = b.recv_records()
            except csock.MalformedRecordError as error:
                batch = error.records
            except csock.SequenceError as error:
                batch = error.records
            if not batch:
                break
            for h, data in batch:
                seen.append(bytes(data) if h is None else h.pack() + bytes(data))
        assert seen == records


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.binary(max_size=40), min_size=1, max_size=80),
       sizes=st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=10),
       into=st.booleans())
def test_zero_length_records_come_through_while_the_peer_is_open(records, sizes, into):
    """Empty and non-empty records in any order, read with batches of random sizes while the
    peer is still connected: every record comes back, empty ones as empty, none as an end."""
    a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_SEQPACKET)
    a.setsockopt(csock.SOL_SOCKET, csock.SO_SNDBUF, 1 << 20)
    with a, b:
        assert a.send_batch(records) == len(records)
        b.settimeout(5)
        buf = bytearray(64 * 70)
        got: list[bytes] = []
        k = 0
        while len(got) < len(records):
            size = sizes[k % len(sizes)]
            k += 1
            if into:
                lengths = b.recv_batch_into(buf, 64, max_messages=size)
                assert lengths
                got += [bytes(buf[i * 64:i * 64 + n]) for i, n in enumerate(lengths)]
            else:
                batch = b.recv_batch(max_messages=size)
                assert batch
                got += [bytes(d.data) for d in batch]
        assert got == records
