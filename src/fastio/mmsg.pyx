# Datagram and record batches: sendmmsg(2) and recvmmsg(2) (DatagramSocket, SeqPacketSocket,
# RawSocket). One system call moves up to MMSG_MAX messages.
cimport cython
from cpython.buffer cimport PyBuffer_Release
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.list cimport PyList_Append, PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_Check, PyTuple_GET_SIZE
from libc.string cimport memcpy, memset, memcmp
from libc.errno cimport errno
from includes.socket cimport (sendmmsg, recvmmsg, recv, mmsghdr, msghdr, sockaddr, sockaddr_storage,
                              socklen_t, MSG_WAITFORONE, MSG_DONTWAIT, MSG_TRUNC, MSG_NOSIGNAL,
                              MSG_PEEK, SOCK_SEQPACKET)
from includes.poll cimport POLLHUP, POLLRDHUP
from includes.pysocket cimport CSOCK_SOCKET_FIELDS
from includes.socket cimport (cmsghdr, CMSG_FIRSTHDR, CMSG_NXTHDR, CMSG_DATA, CMSG_SPACE, CMSG_LEN,
                              AF_INET, AF_INET6, SOCK_DGRAM)
from includes.offload cimport SOL_UDP, UDP_SEGMENT, UDP_GRO
from includes.socket cimport setsockopt, SOL_SOCKET, SO_TIMESTAMPNS, SCM_TIMESTAMPNS
from includes.inet cimport (IPPROTO_IP, IPPROTO_IPV6, IP_PKTINFO, IP_TOS, IP_RECVTOS, IPV6_RECVPKTINFO,
                            IPV6_PKTINFO, IPV6_TCLASS, IPV6_RECVTCLASS, in_pktinfo, in6_pktinfo, inet_ntop,
                            INET6_ADDRSTRLEN)
from libc.stdint cimport uint16_t
from posix.time cimport timespec
from libc.errno cimport EINVAL, EIO, ENOPROTOOPT, EOPNOTSUPP

cdef enum:
    MMSG_MAX = 1024                   # UIO_MAXIOV: the most messages one call takes
    MAX_BATCH = 1 << 20               # items in one send_batch call (ValueError above)
    MAX_RECV_MESSAGES = 1 << 16       # max_messages of one recv_batch call
    MAX_BUFSIZE = 1 << 24             # bufsize of one message
    MAX_SCRATCH = 64 << 20            # receive memory laid out for one recvmmsg
    SCRATCH_AHEAD = 1 << 20           # a receiver's scratch: room for several calls up to this


@cython.final
@cython.freelist(1024)
@cython.no_gc      # fields are read-only and set only by csock (views, addresses, bools, numbers):
                   # none can refer back to a Datagram, so no cycle can form
@cython.auto_pickle(False)   # Cython's generated __setstate__ indexes the state unchecked
cdef public class Datagram [object csock_Datagram, type csock_Datagram_Type]:
    """One received datagram or record: ``data`` (a read-only MessageView that stays valid
    while held), ``address`` (the sender, as the stdlib's recvfrom gives it; None on a
    connected AF_UNIX pair) and ``truncated`` (True when it was longer than bufsize: MSG_TRUNC).
    Unpacks as ``data, address = datagram``. With ``enable_metadata`` on the socket,
    ``timestamp`` (float seconds, kernel receive time), ``destination`` (local IP address
    string), ``interface`` (index) and ``tos`` (TOS / traffic class byte, ECN in the low two
    bits) are filled in; they are None otherwise."""
    # read-only attributes (member descriptors: see members.pyx)
    cdef object data
    cdef object address
    cdef object truncated               # bool
    # Metadata (DatagramSocket.enable_metadata); None when not enabled or not reported.
    cdef object timestamp               # float seconds since the epoch (SO_TIMESTAMPNS)
    cdef object destination             # the local IP address it was sent to (IP_PKTINFO)
    cdef object interface               # index of the interface it arrived on
    cdef object tos                     # IPv4 TOS / IPv6 traffic class byte, ECN bits included

    def __iter__(self):
        return iter((self.data, self.address))

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return (self.data, self.address)[index]

    def __eq__(self, other):
        if isinstance(other, Datagram):
            return (self.data == (<Datagram>other).data and self.address == (<Datagram>other).address
                    and self.truncated == (<Datagram>other).truncated)
        if isinstance(other, tuple) and len(other) == 2:
            return self.data == other[0] and self.address == other[1]
        return NotImplemented

    __hash__ = None

    def __reduce__(self):
        # data pickles as bytes (a view of receive memory cannot cross processes)
        return _restore_datagram, (self.data, self.address, self.truncated, self.timestamp,
                                   self.destination, self.interface, self.tos)

    def __repr__(self):
        flag = ", truncated" if self.truncated else ""
        return f"Datagram({bytes(self.data)[:32]!r}{'...' if len(self.data) > 32 else ''}, {self.address!r}{flag})"


cdef extern from *:
    # the attribute slots in Datagram's instance struct (public class csock_Datagram)
    Py_ssize_t DATAGRAM_DATA "offsetof(struct csock_Datagram, data)"
    Py_ssize_t DATAGRAM_ADDRESS "offsetof(struct csock_Datagram, address)"
    Py_ssize_t DATAGRAM_TRUNCATED "offsetof(struct csock_Datagram, truncated)"
    Py_ssize_t DATAGRAM_TIMESTAMP "offsetof(struct csock_Datagram, timestamp)"
    Py_ssize_t DATAGRAM_DESTINATION "offsetof(struct csock_Datagram, destination)"
    Py_ssize_t DATAGRAM_INTERFACE "offsetof(struct csock_Datagram, interface)"
    Py_ssize_t DATAGRAM_TOS "offsetof(struct csock_Datagram, tos)"

cdef Py_ssize_t _datagram_slots[7]
_datagram_slots[:] = [DATAGRAM_DATA, DATAGRAM_ADDRESS, DATAGRAM_TRUNCATED, DATAGRAM_TIMESTAMP,
                      DATAGRAM_DESTINATION, DATAGRAM_INTERFACE, DATAGRAM_TOS]
install_members(Datagram, ("data", "address", "truncated", "timestamp", "destination",
                           "interface", "tos"), _datagram_slots, True)


def _restore_datagram(data, address, truncated, timestamp=None, destination=None, interface=None,
                      tos=None):
    """A Datagram back from pickle."""
    cdef Datagram d = make_datagram(data, address, bool(truncated))
    d.timestamp, d.destination, d.interface, d.tos = timestamp, destination, interface, tos
    return d


cdef inline Datagram make_datagram(object data, object address, bint truncated):
    cdef Datagram d = Datagram.__new__(Datagram)
    d.data = data
    d.address = address
    d.truncated = truncated
    return d


cdef struct MmsgOp:
    mmsghdr *msgs
    unsigned int count
    int flags


cdef Py_ssize_t sys_sendmmsg(int fd, void *op) noexcept nogil:
    cdef MmsgOp *o = <MmsgOp *>op
    return sendmmsg(fd, o.msgs, o.count, o.flags | MSG_NOSIGNAL | csock_extra_flags)


cdef Py_ssize_t sys_recvmmsg(int fd, void *op) noexcept nogil:
    cdef MmsgOp *o = <MmsgOp *>op
    return recvmmsg(fd, o.msgs, o.count, o.flags | csock_extra_flags, NULL)


cdef int socket_family_type(object sock, int *family, int *kind) except -1:
    if _layout_ok and PyObject_TypeCheck(sock, _socket_type):
        family[0] = CSOCK_SOCKET_FIELDS(sock).sock_family
        kind[0] = CSOCK_SOCKET_FIELDS(sock).sock_type
    else:
        family[0] = sock.family
        kind[0] = sock.type
    return 0


# --- errors after part of a batch went out --------------------------------------------------
# sendmmsg(2) that fails after k messages went out reports k; the failure itself is raised by
# the next send_batch call on that socket (kept in its SocketState), so the caller learns
# exactly how many were sent and never resends or loses one silently.

cdef int raise_deferred_error(IoWait *w) except -1:
    cdef SocketState state
    if w.state == NULL:
        return 0
    state = <SocketState>w.state
    if state.send_error is not None:
        error, state.send_error = state.send_error, None
        raise error
    return 0


cdef bint defer_error(IoWait *w, object error):
    """Keep error for the next send on the socket; False for a stdlib socket (raise it now)."""
    if w.state == NULL:
        return False
    (<SocketState>w.state).send_error = error
    return True


# --- sending --------------------------------------------------------------------------------

cdef class _Outgoing:
    """The parsed items of one send call: buffer exports held until the call returns, and
    one sockaddr per distinct address."""
    cdef Py_ssize_t count, acquired, naddresses
    cdef Py_buffer *views
    cdef int *address_of                 # index into addresses, -1: the connected peer
    cdef sockaddr_storage *addresses
    cdef socklen_t *address_lengths
    cdef char *prefixes                  # optional per-message header bytes
    cdef Py_ssize_t prefix_length

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.acquired):
            PyBuffer_Release(&self.views[i])
        PyMem_Free(self.views)
        PyMem_Free(self.address_of)
        PyMem_Free(self.addresses)
        PyMem_Free(self.address_lengths)
        PyMem_Free(self.prefixes)


cdef _Outgoing parse_outgoing(tuple items, object address, int family):
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
        if index is None:
            index = len(distinct)
            distinct.append(target)
            try:
                seen[target] = index
            except TypeError:
                pass
        out.address_of[i] = index
    out.naddresses = len(distinct)
    out.addresses = <sockaddr_storage *>PyMem_Malloc(max(out.naddresses, 1) * sizeof(sockaddr_storage))
    out.address_lengths = <socklen_t *>PyMem_Malloc(max(out.naddresses, 1) * sizeof(socklen_t))
    if out.addresses == NULL or out.address_lengths == NULL:
        raise MemoryError()
    for i in range(out.naddresses):
        out.address_lengths[i] = sockaddr_from_python(distinct[i], family, &out.addresses[i])
    return out


cdef Py_ssize_t send_outgoing(object sock, IoWait *w, _Outgoing out) except -1:
    """sendmmsg(2) every message of out, MMSG_MAX per call; the count sent. Non-blocking, it
    stops when the kernel would block (BlockingIOError if nothing went out)."""
    cdef Py_ssize_t sent = 0, i, k, r, nbytes, chunk = min(out.count, <Py_ssize_t>MMSG_MAX)
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
                raise
            return sent                      # the error is raised by the next call
        if r == IO_AGAIN:
            if sent == 0:
                raise_would_block()
            return sent
        sent += r
    return sent


# --- GSO: runs of equal-sized datagrams as one message with a UDP_SEGMENT cmsg -------------
# The kernel splits such a message into datagrams of segment size (the last may be shorter),
# all to the message's address (man 7 udp, UDP_SEGMENT). The iovecs point at the caller's
# buffers: nothing is copied. Counts returned are always datagrams, not sendmmsg messages.

cdef enum:
    GSO_MAX_SEGMENTS = 64             # UDP_MAX_SEGMENTS of older kernels (newer take 128)
    GSO_MAX_BYTES = 65507             # the largest UDP payload over IPv4


cdef inline bint is_udp(int family, int kind, int proto) noexcept:
    return (family == AF_INET or family == AF_INET6) and kind == SOCK_DGRAM and (proto == 0 or proto == 17)


cdef inline Py_ssize_t gso_run(_Outgoing out, Py_ssize_t start, Py_ssize_t seg, Py_ssize_t *size) noexcept:
    """How many datagrams from start make one GSO message (1: send it alone); size[0] gets
    the segment size. A run: same destination, every datagram of the segment size except the
    last, which may be shorter (not empty); at most GSO_MAX_SEGMENTS and GSO_MAX_BYTES."""
    cdef Py_ssize_t n = 1, total, length = out.views[start].len
    cdef int dest = out.address_of[start]
    if seg == 0:
        seg = length                    # "auto": the first datagram's size
    size[0] = seg
    if length != seg or seg == 0:
        return 1
    total = length
    while start + n < out.count and n < GSO_MAX_SEGMENTS:
        length = out.views[start + n].len
        if out.address_of[start + n] != dest or length > seg or length == 0 or total + length > GSO_MAX_BYTES:
            break
        total += length
        n += 1
        if length < seg:
            break
    return n


cdef inline bint gso_refused(object error) noexcept:
    cdef int code
    try:
        code = error.errno
    except Exception:
        return False
    return code == EIO or code == EINVAL or code == ENOPROTOOPT or code == EOPNOTSUPP


cdef Py_ssize_t send_gso(object sock, IoWait *w, _Outgoing out, Py_ssize_t seg) except -1:
    """send_chunks with GSO: up to MMSG_MAX messages per sendmmsg(2), each a run of up to
    GSO_MAX_SEGMENTS datagrams. If the kernel refuses a UDP_SEGMENT message (EIO, EINVAL,
    ENOPROTOOPT, EOPNOTSUPP), the rest goes out as plain datagrams and the socket remembers
    (SocketState.gso_off). Returns the number of DATAGRAMS sent."""
    cdef Py_ssize_t pos = 0, m, i, j, used, run, size, nbytes, r, k
    cdef Py_ssize_t chunk = min(out.count, <Py_ssize_t>MMSG_MAX)
    cdef Py_ssize_t iov_cap = min(out.count, <Py_ssize_t>MMSG_MAX * GSO_MAX_SEGMENTS)
    cdef size_t cspace = CMSG_SPACE(sizeof(uint16_t))
    cdef mmsghdr *msgs = <mmsghdr *>PyMem_Malloc(chunk * sizeof(mmsghdr))
    cdef iovec *iov = <iovec *>PyMem_Malloc(iov_cap * sizeof(iovec))
    cdef Py_ssize_t *counts = <Py_ssize_t *>PyMem_Malloc(chunk * sizeof(Py_ssize_t))
    cdef char *control = <char *>PyMem_Malloc(chunk * cspace)
    cdef msghdr *hdr
    cdef cmsghdr *cm
    cdef MmsgOp op
    cdef bint gso = True
    try:
        if msgs == NULL or iov == NULL or counts == NULL or control == NULL:
            raise MemoryError()
        op.msgs = msgs
        op.flags = 0
        while pos < out.count:
            memset(msgs, 0, chunk * sizeof(mmsghdr))
            memset(control, 0, chunk * cspace)
            m = 0
            i = pos
            used = 0
            nbytes = 0
            while m < chunk and i < out.count:
                run = gso_run(out, i, seg, &size) if gso else 1
                hdr = &msgs[m].msg_hdr
                hdr.msg_iov = &iov[used]
                hdr.msg_iovlen = run
                for j in range(run):
                    iov[used + j].iov_base = out.views[i + j].buf
                    iov[used + j].iov_len = out.views[i + j].len
                    nbytes += out.views[i + j].len
                if out.address_of[i] >= 0:
                    hdr.msg_name = &out.addresses[out.address_of[i]]
                    hdr.msg_namelen = out.address_lengths[out.address_of[i]]
                if run > 1:
                    hdr.msg_control = control + m * cspace
                    hdr.msg_controllen = cspace
                    cm = CMSG_FIRSTHDR(hdr)
                    cm.cmsg_level = SOL_UDP
                    cm.cmsg_type = UDP_SEGMENT
                    cm.cmsg_len = CMSG_LEN(sizeof(uint16_t))
                    (<uint16_t *>CMSG_DATA(cm))[0] = <uint16_t>size
                counts[m] = run
                used += run
                i += run
                m += 1
            op.count = <unsigned int>m
            try:
                r = io_call(w, sys_sendmmsg, &op, POLLOUT, io_may_block(w, nbytes))
            except OSError as error:
                if gso and counts[0] > 1 and not isinstance(error, TimeoutError) and gso_refused(error):
                    gso = False              # the kernel or the route refuses GSO: plain from here
                    if w.state != NULL:
                        (<SocketState>w.state).gso_off = True
                    continue
                if pos == 0 or isinstance(error, TimeoutError) or not defer_error(w, error):
                    raise
                return pos
            if r == IO_AGAIN:
                if pos == 0:
                    raise_would_block()
                return pos
            for k in range(r):
                pos += counts[k]
        return pos
    finally:
        PyMem_Free(msgs)
        PyMem_Free(iov)
        PyMem_Free(counts)
        PyMem_Free(control)


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
    """send_batch(messages, address=None) -> count: every item (bytes-like, to `address` or the
    connected peer, or a (data, address) pair) as one datagram, with one sendmmsg(2) per up to
    1024. Blocking or with a timeout: all are sent, or it raises. Non-blocking: returns how many
    went out before the kernel would block (BlockingIOError if none). If the kernel fails after
    k datagrams went out, it returns k and the next call raises that error.

    segment_size=N or "auto" (UDP only; ignored on other sockets): runs of consecutive
    datagrams to the same destination, all N bytes ("auto": the run's first size) but the last
    (which may be shorter), go out as ONE sendmmsg message with a UDP_SEGMENT cmsg (GSO), up to
    64 datagrams and 65,507 bytes per message, straight from the caller's buffers. If the
    kernel or the route refuses GSO, the datagrams go out plainly and the socket stops trying.
    The count returned is always of datagrams."""
    cdef IoWait w
    cdef int family, kind
    cdef Py_ssize_t seg = segment_size_of(segment_size)
    io_begin(sock, &w)
    raise_deferred_error(&w)
    w.resumable = True                  # send_chunks resumes after a partial sendmmsg
    socket_family_type(sock, &family, &kind)
    out = parse_outgoing(tuple(messages), address, family)
    if out.count == 0:
        return 0
    if seg != -2 and out.count > 1 and is_udp(family, kind, sock.proto) \
            and not (w.state != NULL and (<SocketState>w.state).gso_off):
        return send_gso(sock, &w, out, seg)
    return send_outgoing(sock, &w, out)


# --- receiving ------------------------------------------------------------------------------

cdef Py_ssize_t receive_messages(IoWait *w, mmsghdr *msgs, Py_ssize_t count, int flags,
                                 Py_ssize_t slot) except -1:
    """One recvmmsg(2) into count laid-out headers: how many messages came, or IO_AGAIN."""
    cdef MmsgOp op
    cdef Py_ssize_t r
    op.msgs = msgs
    op.count = <unsigned int>count
    op.flags = flags
    return io_call(w, sys_recvmmsg, &op, POLLIN, io_may_block(w, count * slot))


# --- SOCK_SEQPACKET: an empty record or the end of stream? -----------------------------------
# recv(2) returns 0 for both, and at end of stream every further recv returns 0 at once, so a
# recvmmsg(2) that reaches the end fills the rest of its batch with zero-length messages. Only
# such a run at the END of a batch can hold the end of stream: zero-length messages followed by
# a non-empty one, or after which the kernel would have blocked (a short batch), are records.
# For a run that ends a full batch, the peer's shutdown state decides: no POLLRDHUP, no end
# (the state only ever goes from open to shut); POLLRDHUP and a non-empty record queued next
# (a peek), still records. Otherwise the run is taken for the end of stream: after the peer's
# shutdown no call can tell a queued zero-length record from the end (recv_batch's docstring).

cdef bint peer_has_shut_down(int fd) noexcept nogil:
    """True once the peer has shut down writing (or this end reading): POLLRDHUP, zero wait."""
    cdef pollfd p
    p.fd = fd
    p.events = POLLRDHUP
    p.revents = 0
    return poll(&p, 1, 0) == 1 and (p.revents & (POLLRDHUP | POLLHUP)) != 0


cdef bint non_empty_record_next(int fd) noexcept nogil:
    """True when the next queued record holds data (a peek: nothing is taken)."""
    cdef char byte
    return recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC) > 0


cdef Py_ssize_t records_before_end(int fd, mmsghdr *msgs, Py_ssize_t received, Py_ssize_t asked) noexcept:
    """How many of the `received` messages (of `asked`) are records; the rest, a run of
    zero-length messages at the end, is the end of stream (see above)."""
    cdef Py_ssize_t end = received
    while end > 0 and msgs[end - 1].msg_len == 0:
        end -= 1
    if end == received or received < asked:
        return received
    if not peer_has_shut_down(fd) or non_empty_record_next(fd):
        return received
    return end


@cython.final
cdef inline void point_header(mmsghdr *msg, iovec *iov, char *at, Py_ssize_t size) noexcept:
    """A receive header for one message of up to size bytes at `at` (no address, no control
    data; the caller adds those it wants)."""
    iov.iov_base = at
    iov.iov_len = size
    memset(&msg.msg_hdr, 0, sizeof(msghdr))
    msg.msg_hdr.msg_iov = iov
    msg.msg_hdr.msg_iovlen = 1


cdef class BatchReceiver:
    """Per-socket receive state: headers, iovecs and address slots for recvmmsg(2), and a
    scratch Arena of `capacity` slots of `slot` bytes, whose headers are laid out once. Each
    call receives into the slots from `next_free` on, so views handed out by earlier calls
    keep their slots and a call costs no set-up; the scratch starts over at slot 0 when no
    view refers to it, and is replaced when it is full and still referred to (by the spare,
    the one before it, once that is free again). Small batches are compacted into a
    right-sized arena so that held views do not pin the whole scratch."""
    cdef Py_ssize_t capacity, slot
    cdef Py_ssize_t first                # this call's first slot
    cdef Py_ssize_t next_free            # slots below it may be referred to by views
    cdef Py_ssize_t headers_ready        # slots below it have their headers laid out
    cdef Py_ssize_t on_scratch           # slots below it point into the current scratch
    cdef bint with_senders               # the headers ask the kernel for senders' addresses
    cdef mmsghdr *msgs
    cdef iovec *iovs
    cdef sockaddr_storage *names
    cdef Arena scratch
    cdef Arena spare                     # the scratch before it, taken back once no view refers to it
    cdef Py_ssize_t scratches_made       # for scratch_allocations()
    cdef AddressCache addresses
    cdef bint busy
    cdef char *controls                  # control (cmsg) buffers: control_capacity of control_space
    cdef Py_ssize_t control_capacity, control_space
    cdef char last_destination[16]       # the last destination address decoded, and its string
    cdef int last_destination_family
    cdef object last_destination_text
    cdef mmsghdr *into_msgs              # recv_batch_into: MMSG_MAX headers into a caller's buffer,
    cdef iovec *into_iovs                # laid out for into_base/into_slot (into_headers_ready of them)
    cdef char *into_base
    cdef Py_ssize_t into_slot, into_headers_ready

    def __cinit__(self):
        self.addresses = AddressCache()

    def __dealloc__(self):
        PyMem_Free(self.msgs)
        PyMem_Free(self.iovs)
        PyMem_Free(self.names)
        PyMem_Free(self.controls)
        PyMem_Free(self.into_msgs)
        PyMem_Free(self.into_iovs)

    cdef int prepare_control(self, Py_ssize_t count, Py_ssize_t space) except -1:
        """prepare(), then give each of this call's count slots a control buffer of space
        bytes."""
        cdef Py_ssize_t i
        if self.controls == NULL or self.control_space != space or self.control_capacity < self.capacity:
            PyMem_Free(self.controls)
            self.controls = <char *>PyMem_Malloc(self.capacity * space)
            if self.controls == NULL:
                self.control_capacity = 0
                raise MemoryError()
            self.control_capacity = self.capacity
            self.control_space = space
        for i in range(self.first, self.first + count):
            self.msgs[i].msg_hdr.msg_control = self.controls + i * space
            self.msgs[i].msg_hdr.msg_controllen = space
        return 0

    cdef int prepare(self, Py_ssize_t count, Py_ssize_t slot, bint names=True) except -1:
        """Find count free slots of slot bytes for this call (self.first on); names: ask the
        kernel for each sender's address (a SEQPACKET socket is connected: its records carry
        none worth copying). The scratch holds several calls' worth of slots (up to
        SCRATCH_AHEAD bytes), so held views rarely force new memory."""
        cdef Py_ssize_t want = max(count, min(4 * count, SCRATCH_AHEAD // max(slot, 1))), end
        if want > self.capacity:
            PyMem_Free(self.msgs)
            PyMem_Free(self.iovs)
            PyMem_Free(self.names)
            self.msgs = <mmsghdr *>PyMem_Malloc(want * sizeof(mmsghdr))
            self.iovs = <iovec *>PyMem_Malloc(want * sizeof(iovec))
            self.names = <sockaddr_storage *>PyMem_Malloc(want * sizeof(sockaddr_storage))
            if self.msgs == NULL or self.iovs == NULL or self.names == NULL:
                self.capacity = 0
                raise MemoryError()
            self.capacity = want
            self.scratch = self.spare = None
            self.headers_ready = 0               # new headers
        if self.scratch is None or slot != self.slot or names != self.with_senders \
                or (self.next_free + count > self.capacity and not arena_is_private(<PyObject *>self.scratch)):
            self.renew_scratch(self.capacity * slot)
            if slot != self.slot or names != self.with_senders:
                self.headers_ready = 0           # the headers depend on these, not on the memory
            self.slot = slot
            self.with_senders = names
            self.on_scratch = 0
            self.next_free = 0
        elif arena_is_private(<PyObject *>self.scratch):
            self.next_free = 0                   # no view left: start over in warm memory
        self.first = self.next_free
        end = self.first + count
        if end > self.on_scratch:               # another scratch (the spare, say): same headers
            self.rebase(self.on_scratch, min(end, self.headers_ready))
        if end > self.headers_ready:
            self.lay_out(self.headers_ready, end)
            self.headers_ready = end
        self.on_scratch = max(self.on_scratch, end)
        return 0

    cdef int renew_scratch(self, Py_ssize_t size) except -1:
        """Memory of at least size bytes for a new layout: the scratch itself if no view refers
        to it; else the scratch before it once no view refers to that (a caller that keeps one
        batch while receiving the next thus alternates between two); else a new one, the old
        becoming the spare."""
        if self.scratch is not None and arena_is_private(<PyObject *>self.scratch) and self.scratch.size >= size:
            return 0
        if self.spare is not None and arena_is_private(<PyObject *>self.spare) and self.spare.size >= size:
            self.scratch, self.spare = self.spare, self.scratch
        else:
            self.spare = self.scratch
            self.scratch = Arena(max(size, 1), True)
            self.scratches_made += 1
        return 0

    cdef void rebase(self, Py_ssize_t start, Py_ssize_t end) noexcept:
        """Point the laid-out slots [start, end) at their part of the current scratch: all a
        change of scratch needs when slot and names are the same (the kernel writes back
        msg_len, msg_flags, msg_namelen and msg_controllen, never an iovec)."""
        cdef Py_ssize_t i
        for i in range(start, end):
            self.iovs[i].iov_base = self.scratch.data + i * self.slot

    cdef void lay_out(self, Py_ssize_t start, Py_ssize_t end) noexcept:
        """Point the headers of slots [start, end) at their part of the scratch (and their
        address buffers)."""
        cdef Py_ssize_t i
        for i in range(start, end):
            point_header(&self.msgs[i], &self.iovs[i], self.scratch.data + i * self.slot, self.slot)
            if self.with_senders:
                self.msgs[i].msg_hdr.msg_name = &self.names[i]
                self.msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)

    cdef Py_ssize_t receive(self, IoWait *w, Py_ssize_t count, int flags) except -1:
        cdef Py_ssize_t r = receive_messages(w, self.msgs + self.first, count, flags, self.slot)
        if r > 0:
            self.next_free = self.first + r      # views may refer to these from now on
        return r

    cdef mmsghdr *lay_out_into(self, char *base, Py_ssize_t slot, Py_ssize_t count) except NULL:
        """Headers for count messages into base + i * slot (no addresses, no control data),
        kept while the caller passes the same memory and bufsize: headers depend on nothing
        else, so a call with the same buffer costs no set-up."""
        cdef Py_ssize_t i
        if self.into_msgs == NULL:
            self.into_msgs = <mmsghdr *>PyMem_Malloc(MMSG_MAX * sizeof(mmsghdr))
            self.into_iovs = <iovec *>PyMem_Malloc(MMSG_MAX * sizeof(iovec))
            if self.into_msgs == NULL or self.into_iovs == NULL:
                PyMem_Free(self.into_msgs)
                PyMem_Free(self.into_iovs)
                self.into_msgs = NULL
                self.into_iovs = NULL
                raise MemoryError()
        if base != self.into_base or slot != self.into_slot:
            self.into_base = base
            self.into_slot = slot
            self.into_headers_ready = 0
        for i in range(self.into_headers_ready, count):
            point_header(&self.into_msgs[i], &self.into_iovs[i], base + i * slot, slot)
        self.into_headers_ready = max(self.into_headers_ready, count)
        return self.into_msgs

    cdef inline object sender(self, Py_ssize_t i):
        """The address of the message in slot i (None when the layout asks for none); its
        address buffer is made whole again for the next call into that slot."""
        if not self.with_senders:
            return None
        address = self.addresses.decode(<sockaddr *>&self.names[i], self.msgs[i].msg_hdr.msg_namelen)
        self.msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
        return address

    cdef list collect(self, Py_ssize_t received):
        """The first `received` messages of this call as a new list of Datagrams (views),
        compacting small batches. The list is made at its final size (cheaper than appending
        one by one)."""
        cdef Py_ssize_t i, total = 0, length, end
        cdef Arena arena = self.scratch
        cdef char *at = NULL
        cdef list batch
        for i in range(self.first, self.first + received):
            total += self.msgs[i].msg_len
        if total * 4 < received * self.slot:     # mostly empty slots: copy out what arrived
            arena = Arena(total)
            at = arena.data
        batch = PyList_New(received)             # NULL items until set: safe to drop on error
        end = self.first + received
        for i in range(self.first, end):
            length = self.msgs[i].msg_len
            if arena is self.scratch:
                view = make_view(arena, <char *>self.iovs[i].iov_base, length)
            else:
                memcpy(at, self.iovs[i].iov_base, length)
                view = make_view(arena, at, length)
                at += length
            d = make_datagram(view, self.sender(i), (self.msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0)
            Py_INCREF(d)                          # PyList_SET_ITEM steals a reference
            PyList_SET_ITEM(batch, i - self.first, d)
        return batch

    cdef object destination_text(self, int family, const void *address):
        cdef char text[INET6_ADDRSTRLEN]
        cdef size_t size = 4 if family == AF_INET else 16
        if self.last_destination_text is not None and self.last_destination_family == family \
                and memcmp(self.last_destination, address, size) == 0:
            return self.last_destination_text
        if inet_ntop(family, address, text, sizeof(text)) == NULL:
            return None
        memcpy(self.last_destination, address, size)
        self.last_destination_family = family
        self.last_destination_text = text.decode("ascii")
        return self.last_destination_text

    cdef int collect_ext(self, list into, Py_ssize_t received, Py_ssize_t bufsize) except -1:
        """collect() for GRO and metadata: reads each message's control messages, splits a
        coalesced (UDP_GRO) message into its datagrams of gso_size bytes (the last may be
        shorter; all share the sender's address and metadata) and cuts each at bufsize."""
        cdef Py_ssize_t i, total = 0, length, off, n
        cdef Arena arena = self.scratch
        cdef char *at = NULL
        cdef char *base
        cdef int gso, value
        cdef msghdr *hdr
        cdef cmsghdr *cm
        cdef timespec ts
        cdef in_pktinfo info4
        cdef in6_pktinfo info6
        cdef Datagram d
        cdef bint cut
        for i in range(self.first, self.first + received):
            total += self.msgs[i].msg_len
        if total * 4 < received * self.slot:     # mostly empty slots: copy out what arrived
            arena = Arena(total)
            at = arena.data
        for i in range(self.first, self.first + received):
            hdr = &self.msgs[i].msg_hdr
            length = self.msgs[i].msg_len
            base = <char *>self.iovs[i].iov_base
            if at != NULL:
                memcpy(at, base, length)
                base = at
                at += length
            address = self.sender(i)
            gso = 0
            timestamp = destination = interface = tos = None
            cm = CMSG_FIRSTHDR(hdr) if hdr.msg_controllen > 0 else NULL
            while cm != NULL:
                if cm.cmsg_level == SOL_UDP and cm.cmsg_type == UDP_GRO:
                    memcpy(&gso, CMSG_DATA(cm), sizeof(int))
                elif cm.cmsg_level == SOL_SOCKET and cm.cmsg_type == SCM_TIMESTAMPNS:
                    memcpy(&ts, CMSG_DATA(cm), sizeof(ts))
                    timestamp = ts.tv_sec + ts.tv_nsec * 1e-9
                elif cm.cmsg_level == IPPROTO_IP and cm.cmsg_type == IP_PKTINFO:
                    memcpy(&info4, CMSG_DATA(cm), sizeof(info4))
                    destination = self.destination_text(AF_INET, &info4.ipi_addr)
                    interface = info4.ipi_ifindex
                elif cm.cmsg_level == IPPROTO_IPV6 and cm.cmsg_type == IPV6_PKTINFO:
                    memcpy(&info6, CMSG_DATA(cm), sizeof(info6))
                    destination = self.destination_text(AF_INET6, &info6.ipi6_addr)
                    interface = info6.ipi6_ifindex
                elif cm.cmsg_level == IPPROTO_IP and cm.cmsg_type == IP_TOS:
                    tos = (<unsigned char *>CMSG_DATA(cm))[0]
                elif cm.cmsg_level == IPPROTO_IPV6 and cm.cmsg_type == IPV6_TCLASS:
                    memcpy(&value, CMSG_DATA(cm), sizeof(int))
                    tos = value
                cm = CMSG_NXTHDR(hdr, cm)
            cut = (hdr.msg_flags & MSG_TRUNC) != 0
            if gso <= 0 or gso >= length:
                gso = length
            off = 0
            while True:
                n = min(<Py_ssize_t>gso, length - off)
                d = make_datagram(make_view(arena, base + off, min(n, bufsize)), address, cut or n > bufsize)
                d.timestamp = timestamp
                d.destination = destination
                d.interface = interface
                d.tos = tos
                PyList_Append(into, d)
                off += n
                if off >= length:
                    break
        return 0


def scratch_allocations(sock):
    """scratch_allocations(sock) -> int: how many scratch arenas sock's batch receiver has
    taken so far (new receive memory, as opposed to memory used again)."""
    cdef SocketState state = existing_state(sock)
    if state is None or state.receiver is None:
        return 0
    return (<BatchReceiver>state.receiver).scratches_made


cdef BatchReceiver receiver_of(IoWait *w):
    """The socket's BatchReceiver (made on first use); a fresh one while another thread's call
    is using it (busy), or for a stdlib socket."""
    cdef SocketState state = <SocketState>w.state if w.state != NULL else None
    cdef BatchReceiver receiver
    if state is not None and state.receiver is not None:
        receiver = <BatchReceiver>state.receiver
        if not receiver.busy:
            return receiver
        return BatchReceiver()
    receiver = BatchReceiver()
    if state is not None:
        state.receiver = receiver
    return receiver


# --- GRO and metadata -------------------------------------------------------------------------
# A socket's receive mode (SocketState.rx_mode): RX_GRO once UDP_GRO is set (then every
# recv_batch on it splits coalesced messages, whatever its gro argument), the metadata wanted.
cdef enum:
    RX_GRO = 1
    RX_GRO_REFUSED = 2
    RX_TIMESTAMP = 4
    RX_DESTINATION = 8
    RX_TOS = 16
    RX_EXTENDED = RX_GRO | RX_TIMESTAMP | RX_DESTINATION | RX_TOS
    GRO_SLOT = 65535                  # a coalesced message is at most 64 KiB
    MAX_GRO_SCRATCH = 16 << 20        # 256 slots of 64 KiB (each may carry 64 datagrams)
    RX_CONTROL_SPACE = 256            # cmsg room per slot: GRO + timestamp + pktinfo + tos

cdef inline bint set_int_option(int fd, int level, int name, int value) noexcept:
    return setsockopt(fd, level, name, &value, sizeof(value)) == 0


cdef inline int rx_mode_of(IoWait *w) noexcept:
    """The socket's receive mode (0 for a stdlib socket)."""
    return (<SocketState>w.state).rx_mode if w.state != NULL else 0


cdef int rx_mode(object sock, IoWait *w, bint gro, int family, int kind) except -1:
    """The socket's receive mode; with gro, UDP_GRO is set first if not yet tried (csock
    sockets only: a stdlib socket has nowhere to remember it)."""
    cdef int mode = rx_mode_of(w)
    if gro and w.state != NULL and not (mode & (RX_GRO | RX_GRO_REFUSED)) \
            and is_udp(family, kind, sock.proto):
        mode |= RX_GRO if set_int_option(w.fd, SOL_UDP, UDP_GRO, 1) else RX_GRO_REFUSED
        (<SocketState>w.state).rx_mode = mode
    return mode


def enable_gro(sock):
    """enable_gro() -> bool: set UDP_GRO now (recv_batch(gro=True) does it at its first call;
    datagrams queued before that are not coalesced). True when the kernel accepted it."""
    cdef IoWait w
    cdef int family, kind
    io_begin(sock, &w)
    socket_family_type(sock, &family, &kind)
    return (rx_mode(sock, &w, True, family, kind) & RX_GRO) != 0


def enable_metadata(sock, *, bint timestamp=False, bint destination=False, bint tos=False):
    """enable_metadata(*, timestamp=False, destination=False, tos=False): have recv_batch fill in
    Datagram.timestamp (SO_TIMESTAMPNS), .destination and .interface (IP_PKTINFO /
    IPV6_RECVPKTINFO) and .tos (IP_RECVTOS / IPV6_RECVTCLASS) for UDP. False turns one off."""
    cdef IoWait w
    cdef int family, kind, mode
    io_begin(sock, &w)
    socket_family_type(sock, &family, &kind)
    if w.state == NULL:
        raise TypeError("enable_metadata needs a csock DatagramSocket")
    if not is_udp(family, kind, sock.proto):
        raise ValueError("enable_metadata is for UDP sockets (AF_INET, AF_INET6)")
    mode = rx_mode_of(&w)
    options = [(SOL_SOCKET, SO_TIMESTAMPNS, timestamp, RX_TIMESTAMP)]
    if family == AF_INET6:
        options += [(IPPROTO_IPV6, IPV6_RECVPKTINFO, destination, RX_DESTINATION),
                    (IPPROTO_IPV6, IPV6_RECVTCLASS, tos, RX_TOS)]
    else:
        options += [(IPPROTO_IP, IP_PKTINFO, destination, RX_DESTINATION),
                    (IPPROTO_IP, IP_RECVTOS, tos, RX_TOS)]
    for level, name, on, bit in options:
        if not set_int_option(w.fd, level, name, 1 if on else 0):
            raise_errno(errno)
        if family == AF_INET6 and bit != RX_TIMESTAMP:   # IPv4 traffic on a dual-stack socket
            set_int_option(w.fd, IPPROTO_IP, IP_PKTINFO if bit == RX_DESTINATION else IP_RECVTOS,
                           1 if on else 0)
        mode = (mode | bit) if on else (mode & ~bit)
    (<SocketState>w.state).rx_mode = mode


cdef list recv_batch_ext(object sock, IoWait *w, Py_ssize_t max_messages, Py_ssize_t bufsize, int mode):
    """recv_batch with control messages: GRO splitting and metadata. Datagrams beyond
    max_messages (the rest of a coalesced message) wait in SocketState.pending for the next
    call (rx_mode is set only on a csock socket, so w.state is one)."""
    cdef BatchReceiver receiver
    cdef Py_ssize_t slot = max(bufsize, <Py_ssize_t>GRO_SLOT) if mode & RX_GRO else bufsize
    cdef Py_ssize_t per_call = min(max_messages, <Py_ssize_t>MMSG_MAX, max(<Py_ssize_t>1, MAX_SCRATCH // max(slot, 1)))
    cdef Py_ssize_t want, r
    if mode & RX_GRO:
        per_call = min(per_call, max(<Py_ssize_t>1, MAX_GRO_SCRATCH // slot))
    cdef int flags = MSG_WAITFORONE
    cdef list batch = []
    cdef SocketState state = <SocketState>w.state
    cdef list pending = state.pending
    if pending:
        batch = pending[:max_messages]
        state.pending = pending[max_messages:] or None
        if len(batch) >= max_messages:
            return batch
        w.timeout_ns = 0                 # something to return: take only what is queued
        flags = MSG_DONTWAIT
    receiver = receiver_of(w)
    receiver.busy = True
    try:
        while len(batch) < max_messages:
            want = min(per_call, max_messages - len(batch))
            receiver.prepare(want, slot)
            receiver.prepare_control(want, RX_CONTROL_SPACE)
            r = receiver.receive(w, want, flags)
            if r == IO_AGAIN:
                if not batch:
                    raise_would_block()
                break
            receiver.collect_ext(batch, r, bufsize)
            if r < want:
                break                         # the queue is drained
            flags = MSG_DONTWAIT              # more may be queued: take it without waiting
            w.timeout_ns = 0
    finally:
        receiver.busy = False
    if len(batch) > max_messages:
        rest = batch[max_messages:]
        del batch[max_messages:]
        state.pending = rest if not state.pending else state.pending + rest
    return batch


def pending_datagrams(sock):
    """pending_datagrams(sock) -> int: datagrams of split GRO messages that sock keeps for its
    next recv_batch (poll and select cannot see them: an event loop asks here)."""
    cdef SocketState state = existing_state(sock)
    return 0 if state is None or not state.pending else len(state.pending)


def recv_batch(sock, Py_ssize_t max_messages=64, Py_ssize_t bufsize=65535, *, bint gro=False):
    """recv_batch(max_messages=64, bufsize=65535) -> [Datagram]: blocks (within the socket's
    timeout; BlockingIOError when non-blocking) until one datagram is queued, then returns all
    that are, up to max_messages, with recvmmsg(2, MSG_WAITFORONE). A datagram longer than
    bufsize is cut and flagged ``truncated``; bufsize=0 on a datagram socket takes each datagram
    as an empty Datagram with its address, ``truncated`` unless it was empty (as recvfrom(0)).

    On a SOCK_SEQPACKET socket, [] means end of stream (records before it are returned first)
    and a zero-length record is an empty Datagram: recv(2) returns 0 for both, so csock asks
    the peer's shutdown state (poll(2) POLLRDHUP) and, once the peer has shut down, peeks at
    the next record. What stays ambiguous, once the peer has shut down: zero-length records
    with nothing but zero-length records after them before the close (typically one sent
    right before close()) read as the end of stream, and so do zero-length records that end a
    full batch (max_messages taken) when the record queued next is zero-length too. bufsize=0
    is a ValueError there (every record would come back empty).

    gro=True (UDP; ignored elsewhere): sets UDP_GRO on the socket (once; it stays set, and every
    later recv_batch splits), so the kernel may hand over runs of datagrams from one sender as
    one coalesced message, which recv_batch splits back: the caller sees the same datagrams,
    order and addresses as without GRO. max_messages still counts datagrams: the rest of a
    coalesced message is kept and returned first by the next recv_batch (select/poll do not
    see those; recv/recvfrom on a GRO socket may return coalesced messages)."""
    cdef IoWait w
    cdef BatchReceiver receiver
    cdef Py_ssize_t per_call, want, r, n, i, got = 0
    cdef int family, kind, flags = MSG_WAITFORONE
    cdef list batch = None, part
    cdef bint records
    if max_messages < 1 or max_messages > MAX_RECV_MESSAGES:
        raise ValueError(f"max_messages must be between 1 and {MAX_RECV_MESSAGES}")
    if bufsize < 0 or bufsize > MAX_BUFSIZE:
        raise ValueError(f"bufsize must be between 0 and {MAX_BUFSIZE}")
    io_begin(sock, &w)
    socket_family_type(sock, &family, &kind)
    records = kind == SOCK_SEQPACKET
    if records and bufsize == 0:            # every record would read as empty, data dropped
        raise ValueError(f"bufsize must be between 1 and {MAX_BUFSIZE} on a SOCK_SEQPACKET socket")
    if rx_mode_of(&w) or gro:
        mode = rx_mode(sock, &w, gro, family, kind)
        if mode & RX_EXTENDED:
            return recv_batch_ext(sock, &w, max_messages, bufsize, mode)
    per_call = min(max_messages, <Py_ssize_t>MMSG_MAX, max(<Py_ssize_t>1, MAX_SCRATCH // max(bufsize, 1)))
    receiver = receiver_of(&w)
    receiver.busy = True
    try:
        while got < max_messages:
            want = min(per_call, max_messages - got)
            receiver.prepare(want, bufsize, not records)
            r = receiver.receive(&w, want, flags)
            if r == IO_AGAIN:
                if batch is None:
                    raise_would_block()
                break
            n = r
            if records and fd_still_ours(&w):      # (closed meanwhile: what came is records)
                n = records_before_end(w.fd, receiver.msgs + receiver.first, r, want)
            part = receiver.collect(n)
            if batch is None:
                batch = part
            else:
                batch.extend(part)
            got += n
            if n < r:                         # SEQPACKET end of stream inside this batch
                break
            if r < per_call:
                break                         # the queue is drained
            flags = MSG_DONTWAIT              # more may be queued: take it without waiting
            w.timeout_ns = 0                  # ... and without polling until the deadline
    finally:
        receiver.busy = False
    return batch


def recv_batch_into(sock, buffer, Py_ssize_t bufsize, Py_ssize_t max_messages=MMSG_MAX):
    """recv_batch_into(buffer, bufsize, max_messages=1024) -> [length]: recv_batch without
    objects per message: one recvmmsg(2, MSG_WAITFORONE) into the caller's writable buffer,
    message i at buffer[i * bufsize:], and a list of the lengths. Blocks as recv_batch does
    (within the socket's timeout; BlockingIOError when non-blocking) until one message, then
    takes every one queued, up to max_messages, len(buffer) // bufsize and 1024.

    A message longer than bufsize is cut to bufsize bytes and its length is the full one
    (recvmmsg with MSG_TRUNC): a length above bufsize is how truncation shows. No senders'
    addresses (recv_batch has them). On SOCK_SEQPACKET, [] is the end of stream (records before
    it are returned first) and a zero-length record is a length of 0, told from the end of
    stream as recv_batch does (same ambiguous case). The buffer is the caller's: the next call overwrites it. Not on a
    socket with UDP_GRO set (ValueError): coalesced messages need recv_batch to split them."""
    cdef IoWait w
    cdef Py_buffer view
    cdef BatchReceiver receiver
    cdef mmsghdr *msgs
    cdef Py_ssize_t count, r, i
    cdef int family, kind
    if bufsize < 1 or bufsize > MAX_BUFSIZE:
        raise ValueError(f"bufsize must be between 1 and {MAX_BUFSIZE}")
    if max_messages < 1:
        raise ValueError("max_messages must be at least 1")
    io_begin(sock, &w)
    socket_family_type(sock, &family, &kind)
    if rx_mode_of(&w) & RX_GRO:
        raise ValueError("recv_batch_into cannot split UDP_GRO-coalesced messages: use recv_batch")
    get_writable_buffer(buffer, &view, "recv_batch_into")
    try:
        count = min(max_messages, view.len // bufsize, <Py_ssize_t>MMSG_MAX)
        if count < 1:
            raise ValueError(f"the buffer ({view.len} bytes) is smaller than bufsize ({bufsize})")
        receiver = receiver_of(&w)
        receiver.busy = True
        try:
            msgs = receiver.lay_out_into(<char *>view.buf, bufsize, count)
            r = receive_messages(&w, msgs, count, MSG_WAITFORONE | MSG_TRUNC, bufsize)
            if r == IO_AGAIN:
                raise_would_block()
            if kind == SOCK_SEQPACKET and fd_still_ours(&w):   # zero-length messages at the end:
                r = records_before_end(w.fd, msgs, r, count)        # records or the end?
            return [msgs[i].msg_len for i in range(r)]
        finally:
            receiver.busy = False
    finally:
        PyBuffer_Release(&view)
