# SPPHeader: the 12-byte record header of the Xerox NS Sequenced Packet Protocol, in network
# byte order: connection control (1 byte: SP_SP system packet, SP_SA send acknowledgement,
# SP_OB attention, SP_EM end of message), datastream type (1), source and destination
# connection ids (2 + 2), sequence, acknowledge and allocation numbers (2 each).
cimport cython
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from includes.byteorder cimport load_be16, store_be16
import _thread

SP_SP = 0x80
SP_SA = 0x40
SP_OB = 0x20
SP_EM = 0x10
SPP_HEADER_LENGTH = SPP_HEADER_SIZE       # (spp.pxd)


cdef int checked(str name, object value, int limit) except -1:
    cdef long v
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"SPPHeader.{name} must be an int, not {type(value).__name__}")
    v = value
    if v < 0 or v > limit:
        raise ValueError(f"SPPHeader.{name} must be between 0 and {limit}, got {value}")
    return v


@cython.final
@cython.freelist(64)
cdef class SPPHeader:
    """The Xerox NS SPP record header (12 bytes, network byte order).

    ``sequence=None`` (the default) lets the sending socket number the record.

    Attributes
    ----------
    connection_control : int
        Control bits (``SP_SP`` system packet, ``SP_SA`` send acknowledgement, ``SP_OB``
        attention, ``SP_EM`` end of message), 0..255.
    datastream_type : int
        The client's record type, 0..255.
    source_connection : int
        The sender's connection id, 0..65535.
    destination_connection : int
        The receiver's connection id, 0..65535.
    sequence : int or None
        The record's number, 0..65535; None lets the sending socket number it.
    acknowledge : int
        The next sequence number expected from the peer, 0..65535.
    allocation : int
        The last sequence number the peer may send, 0..65535.
    system_packet : bool
        The ``SP_SP`` bit of connection_control (read-only).
    send_acknowledgement : bool
        The ``SP_SA`` bit (read-only).
    attention : bool
        The ``SP_OB`` bit (read-only).
    end_of_message : bool
        The ``SP_EM`` bit (read-only).
    """

    def __init__(self, connection_control=0, datastream_type=0, source_connection=0,
                 destination_connection=0, sequence=None, acknowledge=0, allocation=0):
        self.connection_control = connection_control
        self.datastream_type = datastream_type
        self.source_connection = source_connection
        self.destination_connection = destination_connection
        self.sequence = sequence
        self.acknowledge = acknowledge
        self.allocation = allocation

    @property
    def connection_control(self):
        return self._connection_control

    @connection_control.setter
    def connection_control(self, value):
        self._connection_control = checked("connection_control", value, 0xFF)

    @property
    def datastream_type(self):
        return self._datastream_type

    @datastream_type.setter
    def datastream_type(self, value):
        self._datastream_type = checked("datastream_type", value, 0xFF)

    @property
    def source_connection(self):
        return self._source

    @source_connection.setter
    def source_connection(self, value):
        self._source = checked("source_connection", value, 0xFFFF)

    @property
    def destination_connection(self):
        return self._destination

    @destination_connection.setter
    def destination_connection(self, value):
        self._destination = checked("destination_connection", value, 0xFFFF)

    @property
    def sequence(self):
        return self._sequence

    @sequence.setter
    def sequence(self, value):
        self._sequence = None if value is None else checked("sequence", value, 0xFFFF)

    @property
    def acknowledge(self):
        return self._acknowledge

    @acknowledge.setter
    def acknowledge(self, value):
        self._acknowledge = checked("acknowledge", value, 0xFFFF)

    @property
    def allocation(self):
        return self._allocation

    @allocation.setter
    def allocation(self, value):
        self._allocation = checked("allocation", value, 0xFFFF)

    cdef void write(self, char *out, int sequence) noexcept:
        out[0] = <char>self._connection_control
        out[1] = <char>self._datastream_type
        store_be16(out + 2, self._source)
        store_be16(out + 4, self._destination)
        store_be16(out + 6, sequence)
        store_be16(out + 8, self._acknowledge)
        store_be16(out + 10, self._allocation)

    def pack(self):
        """The 12 header bytes (sequence 0 if unset)."""
        cdef char out[SPP_HEADER_SIZE]
        self.write(out, self._sequence if self._sequence is not None else 0)
        return PyBytes_FromStringAndSize(out, SPP_HEADER_SIZE)

    def __bytes__(self):
        return self.pack()

    @staticmethod
    def unpack(data):
        """The header at the front of a record: any bytes-like object that is one contiguous
        run of bytes (BufferError for a strided view, as the stdlib's send; ValueError if it is
        shorter than 12 bytes)."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)      # C-contiguous or BufferError
        try:
            if view.len < SPP_HEADER_SIZE:
                raise ValueError(f"an SPP header is {SPP_HEADER_SIZE} bytes, got {view.len}")
            return header_from(<const char *>view.buf)
        finally:
            PyBuffer_Release(&view)

    def replace(self, **changes):
        """A copy with some fields changed."""
        fields = {name: getattr(self, name) for name in _SPP_FIELDS}
        fields.update(changes)
        return SPPHeader(**fields)

    @property
    def system_packet(self):
        return bool(self._connection_control & SP_SP)

    @property
    def send_acknowledgement(self):
        return bool(self._connection_control & SP_SA)

    @property
    def attention(self):
        return bool(self._connection_control & SP_OB)

    @property
    def end_of_message(self):
        return bool(self._connection_control & SP_EM)

    def _key(self):
        return (self._connection_control, self._datastream_type, self._source, self._destination,
                self._sequence, self._acknowledge, self._allocation)

    def __eq__(self, other):
        if not isinstance(other, SPPHeader):
            return NotImplemented
        return self._key() == (<SPPHeader>other)._key()

    def __hash__(self):
        return hash(self._key())

    def __reduce__(self):
        return SPPHeader, self._key()

    def __repr__(self):
        fields = [f"{name}={getattr(self, name)!r}" for name in _SPP_FIELDS]
        return "SPPHeader(" + ", ".join(fields) + ")"


_SPP_FIELDS = ("connection_control", "datastream_type", "source_connection",
               "destination_connection", "sequence", "acknowledge", "allocation")


cdef SPPHeader header_from(const char *raw):
    cdef SPPHeader h = SPPHeader.__new__(SPPHeader)
    h._connection_control = <unsigned char>raw[0]
    h._datastream_type = <unsigned char>raw[1]
    h._source = load_be16(raw + 2)
    h._destination = load_be16(raw + 4)
    h._sequence = load_be16(raw + 6)
    h._acknowledge = load_be16(raw + 8)
    h._allocation = load_be16(raw + 10)
    return h


# --- the record paths: SeqPacketSocket's send_record(s) and recv_record(s) ---------------------
# They run here rather than in csock.seqpacket: the numbering lives in the socket's
# SocketState, and reading it from Python (a property per field, a Python frame per step)
# cost a send_record + recv_record pair twice the instructions of these C reads.

cdef SPPHeader _all_zero = SPPHeader()      # the prototype without a default header


cdef SPPHeader prototype_of(SocketState state, object header):
    """The header a record is sent behind: header, else the socket's default, else all 0."""
    cdef object default
    if header is not None:
        return <SPPHeader>header
    default = state.spp_default_header
    if default is None:
        return _all_zero
    if not isinstance(default, SPPHeader):     # (only a store to the private field does this)
        raise TypeError(f"default_header must be a csock.SPPHeader, not {type(default).__name__}")
    return <SPPHeader>default


cdef Py_ssize_t send_numbered(object sock, object records, object header) except -1:
    """sendmmsg(2) each record behind a copy of the prototype header, numbered from its sequence
    (else the socket's next number) on; the socket's next number then follows the last sent,
    also when an error (a timeout, a signal handler's exception) ends the call after some went.
    The payload is not copied: header and payload are two iovecs."""
    cdef IoWait w
    cdef SocketState state
    if header is not None and not isinstance(header, SPPHeader):
        raise TypeError(f"header must be a csock.SPPHeader or None, not {type(header).__name__}")
    io_begin(sock, &w)
    if w.state == NULL:
        raise TypeError(f"SPP records need a csock socket, not {type(sock).__name__}")
    state = <SocketState>w.state
    # As send_batch's: it resumes after a partial sendmmsg, so a full socket is waited on
    # where close() wakes it, not inside sendmmsg(2).
    w.resumable = True
    if state.spp_send_turn is None:
        state.spp_send_turn = Turn()
    cdef Turn turn = <Turn>state.spp_send_turn
    turn.take(sock, "sends")
    try:
        return send_in_turn(sock, &w, state, records, header)
    finally:
        turn.give_back()


@cython.final
cdef class Turn:
    """One thread of this process at a time sends records on a socket, and one receives them:
    the numbers a send takes and its records' order on the wire must not interleave with
    another's, and a receiver checks the numbers of records in the order the kernel handed
    them out, not in the order threads get the GIL back after recvmmsg(2)."""
    cdef object lock
    cdef unsigned long owner                # the thread in its turn now (0: none)
    cdef unsigned long generation           # _fork_generation when lock was made

    cdef int take(self, object sock, str doing) except -1:
        """Wait for the turn within the socket's timeout (TimeoutError; BlockingIOError when
        non-blocking); a fork() frees a turn another thread held."""
        cdef unsigned long me = current_thread()
        if self.lock is None or self.generation != _fork_generation:
            self.lock = _thread.allocate_lock()
            self.generation = _fork_generation
            self.owner = 0
        elif self.owner == me:
            raise RuntimeError(f"a record call re-entered in the same thread while it {doing} "
                               "records (from a signal handler?)")
        timeout = sock.gettimeout()
        if not (self.lock.acquire(False) if timeout == 0 else
                self.lock.acquire(True, -1 if timeout is None else timeout)):
            if timeout == 0:
                raise_would_block()
            raise_timeout()
        self.owner = me
        return 0

    cdef void give_back(self) noexcept:
        self.owner = 0
        self.lock.release()


cdef Py_ssize_t send_in_turn(object sock, IoWait *w, SocketState state, object records,
                             object header) except -1:
    cdef SPPHeader prototype
    cdef int family = 0, kind = 0, first
    cdef Py_ssize_t i
    prototype = prototype_of(state, header)
    if prototype._sequence is None:
        first = state.spp_next
    else:
        first = prototype._sequence
    raise_deferred_error(w)
    socket_family_type(sock, &family, &kind)
    cdef tuple items = tuple(records)       # a snapshot: see parse_outgoing
    for i in range(len(items)):
        if isinstance(items[i], tuple):
            raise TypeError(f"record {i}: records go to the connected peer, not to an address")
    out = parse_outgoing(items, None, family, w.fd)
    if out.count:
        out.prefix_length = SPP_HEADER_SIZE
        out.prefixes = <char *>PyMem_Malloc(out.count * SPP_HEADER_SIZE)
        if out.prefixes == NULL:
            raise MemoryError()
        for i in range(out.count):
            prototype.write(out.prefixes + i * SPP_HEADER_SIZE, (first + i) & 0xFFFF)
        try:
            send_outgoing(sock, w, out)
        finally:
            # the records the peer got, whatever ended the call: the next one follows them
            state.spp_next = (first + out.sent) & 0xFFFF
        return out.sent
    state.spp_next = first
    return 0


def send_record(sock, data, header=None):
    """Send one record: the 12-byte SPP header, then data, in one sendmmsg(2).

    Parameters
    ----------
    data : bytes-like
        The record's payload (not copied: header and payload go out as two iovecs).
    header : SPPHeader or None, optional
        A prototype header for this record alone; None: the socket's ``default_header``
        (all fields 0 without one). Its ``sequence``, if set, numbers the record; otherwise
        the socket does (the records it has sent so far, modulo 65536).

    Raises
    ------
    TypeError
        data is not bytes-like, or header is not an SPPHeader or None (nothing sent).
    BlockingIOError, TimeoutError, OSError
        As ``send_batch``.
    """
    send_numbered(sock, (data,), header)


def send_records(sock, records, header=None):
    """Send each record behind the header, numbered consecutively, with one sendmmsg(2) per
    1024 records.

    Parameters
    ----------
    records : iterable of bytes-like
        The payloads (not copied).
    header : SPPHeader or None, optional
        The prototype header, as ``send_record``'s: the first record gets its sequence (or
        the socket's next number), each following one the next number.

    Returns
    -------
    int
        How many records went out (``send_batch``'s rules: non-blocking, the kernel may take
        part of the batch; an error after part of it is raised by the next send). Records
        that went out before an exception (a timeout's, a signal handler's) are numbered
        too: the next record follows them.

    Notes
    -----
    Record senders take turns on a socket: a call from another thread waits (within the
    socket's timeout) until the one sending is done, so numbers follow the wire order.

    Raises
    ------
    TypeError
        A record is not bytes-like, or header is not an SPPHeader or None (nothing sent).
    """
    return send_numbered(sock, records, header)


cdef list split_numbered(SocketState state, list batch):
    """[(SPPHeader, payload view)] for the received Datagrams (a record shorter than a header
    gives (None, its view)); raises MalformedRecordError, TruncatedRecordError or
    SequenceError for the batch. Either way the socket then expects the number after the
    last well-formed record's, since the error hands every record over."""
    cdef MessageView v
    cdef list records = []
    cdef Py_ssize_t i, gap = -1
    cdef int sequence, expected = state.spp_expected, expected_at_gap = 0
    cdef bint malformed = False, truncated = False
    for i in range(len(batch)):
        item = batch[i]
        # An exact MessageView: the payload's view shares its arena (a ring's ReceivedView
        # has none).
        if not isinstance(item, Datagram) or type((<Datagram>item).data) is not MessageView:
            raise TypeError(f"SPP records are received Datagrams, not {type(item).__name__}")
        v = <MessageView>(<Datagram>item).data
        truncated |= (<Datagram>item).truncated
        if v.length < SPP_HEADER_SIZE:
            records.append((None, v))
            malformed = True
            continue
        payload = make_view(v.arena, v.ptr + SPP_HEADER_SIZE, v.length - SPP_HEADER_SIZE)
        records.append((header_from(v.ptr), payload))
        sequence = load_be16(v.ptr + 6)
        if expected >= 0 and sequence != expected and gap < 0:
            gap = i
            expected_at_gap = expected
        expected = (sequence + 1) & 0xFFFF
    state.spp_expected = expected
    if malformed or truncated or gap >= 0:
        raise_record_error(records, gap, expected_at_gap, malformed, truncated)
    return records


cdef int raise_record_error(list records, Py_ssize_t gap, int expected, bint malformed,
                            bint truncated) except -1:
    # The error classes belong to csock.seqpacket, whose users catch them; only this rare path
    # needs them, so they are imported here rather than kept by the module.
    from csock.seqpacket import MalformedRecordError, SequenceError, TruncatedRecordError
    if truncated:               # (first: a record cut inside its header is cut, not malformed)
        raise TruncatedRecordError(records)
    if malformed:
        raise MalformedRecordError(records)
    header, data = records[gap]
    raise SequenceError(header, data, expected, records)


cdef list recv_numbered(object sock, object max_messages, object bufsize):
    cdef SocketState state = state_of(sock)
    if state is None:                       # (checked first: a batch received is not lost)
        raise TypeError(f"SPP records need a csock socket, not {type(sock).__name__}")
    if state.spp_recv_turn is None:
        state.spp_recv_turn = Turn()
    cdef Turn turn = <Turn>state.spp_recv_turn
    turn.take(sock, "receives")
    try:
        return split_numbered(state, recv_batch(sock, max_messages, bufsize))
    finally:
        turn.give_back()


def recv_record(sock, bufsize=65535):
    """The next record's header and payload, with one recvmmsg(2) (waits for it).

    Parameters
    ----------
    bufsize : int, optional
        The most bytes kept of the record, header included (``recv_batch``'s rules).

    Returns
    -------
    (SPPHeader, MessageView)
        The header that came with the record (its ``sequence`` set) and the payload, a
        read-only view of the receive memory (no copy).

    Raises
    ------
    EOFError
        End of stream.
    SequenceError
        The record's number is not the one expected; the record is in the error, and the
        socket now expects the number after it.
    MalformedRecordError
        The record is shorter than the 12-byte header, a zero-length one included (see
        SeqPacketSocket for when one reads as the end of stream).
    TruncatedRecordError
        The record was longer than bufsize: the kernel dropped its end; the part kept is in
        the error, and the record counts for the numbering.
    """
    cdef list records = recv_numbered(sock, 1, bufsize)
    if not records:
        raise EOFError("end of stream")
    return records[0]


def recv_records(sock, max_messages=64, bufsize=65535):
    """Every record already queued (at least one: waits), up to max_messages, with one
    recvmmsg(2).

    Returns
    -------
    list of (SPPHeader, MessageView)
        As ``recv_record``'s; ``[]`` at end of stream (records before it come first).

    Raises
    ------
    SequenceError, MalformedRecordError, TruncatedRecordError
        As ``recv_record``'s, carrying the whole batch (``records``); every well-formed
        record in it counts for the numbering.
    """
    return recv_numbered(sock, max_messages, bufsize)
