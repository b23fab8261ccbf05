# send_batch: sendmmsg(2) of every item of a batch, errors after part of it deferred. What
# the other files use (_Outgoing's fields, the senders) is declared in batch_send.pxd.
from cpython.buffer cimport PyBuffer_Release
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_SIZE


# --- errors after part of a batch went out (or came) ------------------------------------------
# sendmmsg(2) that fails after k messages went out reports k; the failure itself is raised by
# the next send_batch call on that socket (kept in its SocketState), so the caller learns
# exactly how many were sent and never resends or loses one silently. A receive that fails
# after part of a batch came returns that part and keeps the failure for the next batch
# receive (received=True), as recvmmsg(2) saves such an error for the next call.

cdef int raise_deferred_error(IoWait *w, bint received=False) except -1:
    cdef SocketState state
    if w.state == NULL:
        return 0
    state = <SocketState>w.state
    if received:
        error, state.recv_error = state.recv_error, None
    else:
        error, state.send_error = state.send_error, None
    if error is not None:
        _check_still_open(w)            # (deferred by a call in flight at close(): EBADF)
        raise error
    return 0


cdef bint defer_error(IoWait *w, object error, bint received=False):
    """Keep error for the socket's next send (or batch receive); False for a stdlib socket,
    which has nowhere to keep it."""
    if w.state == NULL:
        return False
    if received:
        (<SocketState>w.state).recv_error = error
    else:
        (<SocketState>w.state).send_error = error
    return True


# --- sending --------------------------------------------------------------------------------

cdef class _Outgoing:
    """The parsed items of one send call: buffer exports held until the call returns, and
    one sockaddr per distinct address."""

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.acquired):
            PyBuffer_Release(&self.views[i])
        PyMem_Free(self.views)
        PyMem_Free(self.address_of)
        PyMem_Free(self.addresses)
        PyMem_Free(self.address_lengths)
        PyMem_Free(self.prefixes)


cdef bint alike(object first, object other):
    """Whether other, equal to first, converts to the same sockaddr: the same object, or a
    path or tuple whose parts are all str, bytes or int of the same types (an equal float or
    Decimal must still be refused, as the stdlib refuses it)."""
    if first is other:
        return True
    if not (PyTuple_Check(first) and PyTuple_Check(other)):
        return type(first) is type(other) and (type(first) is str or type(first) is bytes)
    if PyTuple_GET_SIZE(first) != PyTuple_GET_SIZE(other):
        return False
    for a, b in zip(<tuple>first, <tuple>other):
        if type(a) is not type(b) or not (type(a) is int or type(a) is str or type(a) is bytes):
            return False
    return True


cdef _Outgoing parse_outgoing(tuple items, object address, int family, int fd):
    """Export every buffer and parse every address before anything is sent: a bad item raises
    TypeError/ValueError/gaierror with nothing sent. items is a tuple (the caller's batch
    copied): parsing runs user code (__hash__, __eq__, __index__ of addresses), which could
    shrink a list that is then indexed without bounds checks."""
    cdef _Outgoing out = _Outgoing.__new__(_Outgoing)
    cdef Py_ssize_t i, n = len(items)
    cdef dict seen = {}
    cdef list distinct = []
    if n > MAX_BATCH:
        raise ValueError(f"a batch holds at most {MAX_BATCH} messages, got {n}")
    out.count = n
    out.views = <Py_buffer *>PyMem_Malloc(max(n, 1) * sizeof(Py_buffer))
    out.address_of = <int *>PyMem_Malloc(max(n, 1) * sizeof(int))
    if out.views == NULL or out.address_of == NULL:
        raise MemoryError()
    for i in range(n):
        item = items[i]
        target = address
        if PyTuple_Check(item):
            if PyTuple_GET_SIZE(item) != 2:
                raise TypeError(f"batch item {i}: expected data or a (data, address) pair")
            item, target = item
        export_readable(item, &out.views[i])
        out.acquired += 1
        if target is None:
            out.address_of[i] = -1
            continue
        try:
            index = seen.get(target)
        except TypeError:                   # unhashable (a bytearray path): no sharing
            index = None
        if index is not None and not alike(distinct[<Py_ssize_t>index], target):
            index = None                    # equal (9 == 9.0), not alike: converted itself
        if index is None:
            index = len(distinct)
            distinct.append(target)
            try:
                seen[target] = index
            except TypeError:
                pass
        out.address_of[i] = index
    out.naddresses = len(distinct)
    out.addresses = <sockaddr_storage *>PyMem_Malloc(
        max(out.naddresses, 1) * sizeof(sockaddr_storage))
    out.address_lengths = <socklen_t *>PyMem_Malloc(max(out.naddresses, 1) * sizeof(socklen_t))
    if out.addresses == NULL or out.address_lengths == NULL:
        raise MemoryError()
    for i in range(out.naddresses):
        out.address_lengths[i] = sockaddr_from_python(distinct[i], family, &out.addresses[i],
                                                      fd)
    return out


cdef Py_ssize_t send_outgoing(object sock, IoWait *w, _Outgoing out) except -1:
    """sendmmsg(2) every message of out, MMSG_MAX per call; the count sent. Non-blocking, it
    stops when the kernel would block (BlockingIOError if nothing went out)."""
    cdef Py_ssize_t chunk = min(out.count, <Py_ssize_t>MMSG_MAX)
    cdef int parts = 2 if out.prefix_length else 1
    cdef mmsghdr *msgs = <mmsghdr *>PyMem_Malloc(chunk * sizeof(mmsghdr))
    cdef iovec *iov = <iovec *>PyMem_Malloc(parts * chunk * sizeof(iovec))
    cdef MmsgOp op
    try:
        if msgs == NULL or iov == NULL:
            raise MemoryError()
        op.msgs = msgs
        op.flags = 0
        return send_chunks(sock, w, out, msgs, iov, &op, parts)
    finally:
        PyMem_Free(msgs)
        PyMem_Free(iov)


cdef Py_ssize_t send_chunks(object sock, IoWait *w, _Outgoing out, mmsghdr *msgs, iovec *iov,
                            MmsgOp *op, int parts) except -1:
    cdef Py_ssize_t sent = 0, i, k, r, nbytes
    while sent < out.count:
        k = min(out.count - sent, <Py_ssize_t>MMSG_MAX)
        nbytes = 0
        for i in range(k):                  # every field of each header (cheaper than memset)
            if out.prefix_length:
                iov[2 * i].iov_base = out.prefixes + (sent + i) * out.prefix_length
                iov[2 * i].iov_len = out.prefix_length
            iov[parts * i + parts - 1].iov_base = out.views[sent + i].buf
            iov[parts * i + parts - 1].iov_len = out.views[sent + i].len
            nbytes += out.views[sent + i].len
            msgs[i].msg_hdr.msg_iov = &iov[parts * i]
            msgs[i].msg_hdr.msg_iovlen = parts
            msgs[i].msg_hdr.msg_control = NULL
            msgs[i].msg_hdr.msg_controllen = 0
            msgs[i].msg_hdr.msg_flags = 0
            if out.address_of[sent + i] >= 0:
                msgs[i].msg_hdr.msg_name = &out.addresses[out.address_of[sent + i]]
                msgs[i].msg_hdr.msg_namelen = out.address_lengths[out.address_of[sent + i]]
            else:
                msgs[i].msg_hdr.msg_name = NULL
                msgs[i].msg_hdr.msg_namelen = 0
        op.count = <unsigned int>k
        try:
            r = io_call(w, sys_sendmmsg, op, POLLOUT, io_may_block(w, nbytes))
        except OSError as error:
            if sent == 0 or isinstance(error, TimeoutError) or not defer_error(w, error):
                note_sent(error, sent)
                raise
            return sent                      # the error is raised by the next call
        if r == IO_AGAIN:
            if send_cut_raises(w, sent):
                raise_would_block_after(sent)
            return sent
        sent += r
        out.sent = sent
    return sent


cdef Py_ssize_t segment_size_of(object segment_size) except -1:
    """0 for "auto", else the size (1..GSO_MAX_BYTES); -2: None (no GSO)."""
    if segment_size is None:
        return -2
    if isinstance(segment_size, str):
        if segment_size == "auto":
            return 0
        raise ValueError(f"segment_size must be an int, 'auto' or None, not {segment_size!r}")
    cdef Py_ssize_t n = segment_size
    if n < 1 or n > GSO_MAX_BYTES:
        raise ValueError(f"segment_size must be between 1 and {GSO_MAX_BYTES}, got {n}")
    return n


def send_batch(sock, messages, address=None, *, segment_size=None):
    """Send every item as one datagram (or record), with one sendmmsg(2) per up to 1024.

    Parameters
    ----------
    messages : iterable
        Each item is bytes-like (sent to `address`, or to the connected peer) or a
        ``(data, address)`` pair. Every item and address is checked before anything is sent.
    address : address or None, optional
        The destination of the items given without one.
    segment_size : int, "auto" or None, optional
        UDP generic segmentation offload (ignored on other sockets): runs of consecutive
        datagrams to one destination, all N bytes (``"auto"``: the run's first size) but the
        last, which may be shorter, go out as ONE sendmmsg message with a ``UDP_SEGMENT`` cmsg,
        up to 64 datagrams and 65,507 bytes per message, straight from the caller's buffers. If
        the kernel or the route refuses GSO, the datagrams go out plainly and the socket stops
        trying.

    Returns
    -------
    int
        How many datagrams went out (never GSO messages). Blocking or with a timeout that is
        all of them; non-blocking, how many the kernel took before it would block. If the
        kernel fails after k datagrams went out, the call returns k and the next call raises
        that error: nothing is resent or lost silently.

    Raises
    ------
    TypeError, ValueError, socket.gaierror
        A bad item or address (nothing sent).
    BlockingIOError
        Non-blocking, and no datagram could be sent; or blocking, and a kernel timeout set
        with ``setsockopt(SO_SNDTIMEO)`` passed before all were sent (``.sent``: how many
        went first).
    TimeoutError
        The socket's timeout passed before all were sent; ``.sent`` is how many went first.
    OSError
        sendmmsg(2)'s error for the first datagram, as the stdlib's subclass (``.sent``: 0).

    Notes
    -----
    One system call per 1024 datagrams (per 1024 GSO messages with segment_size); the data is
    sent from the caller's buffers without a copy.
    """
    cdef IoWait w
    cdef int family = 0, kind = 0
    cdef Py_ssize_t seg = segment_size_of(segment_size)
    io_begin(sock, &w)
    raise_deferred_error(&w)
    w.resumable = True                  # send_chunks resumes after a partial sendmmsg
    socket_family_type(sock, &family, &kind)
    out = parse_outgoing(tuple(messages), address, family, w.fd)
    if out.count == 0:
        return 0
    if seg != -2 and out.count > 1 and is_udp(family, kind, sock.proto) \
            and not (w.state != NULL and (<SocketState>w.state).gso_off):
        return send_gso(sock, &w, out, seg)
    return send_outgoing(sock, &w, out)
