# UDP offloads: GSO (send_batch(segment_size=...)) and GRO (recv_batch(gro=True)). The limits,
# the receive modes and what the other files call are in offload.pxd.
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.string cimport memset
from includes.socket cimport mmsghdr, msghdr, MSG_DONTWAIT
from includes.socket cimport cmsghdr, CMSG_FIRSTHDR, CMSG_DATA, CMSG_SPACE, CMSG_LEN
from includes.offload cimport SOL_UDP, UDP_SEGMENT, UDP_GRO
from libc.stdint cimport uint16_t
from libc.errno cimport EINVAL, EIO, ENOPROTOOPT, EOPNOTSUPP


# --- GSO: runs of equal-sized datagrams as one message with a UDP_SEGMENT cmsg -------------
# The kernel splits such a message into datagrams of segment size (the last may be shorter),
# all to the message's address (man 7 udp, UDP_SEGMENT). The iovecs point at the caller's
# buffers: nothing is copied. Counts returned are always datagrams, not sendmmsg messages.

cdef inline Py_ssize_t gso_run(_Outgoing out, Py_ssize_t start, Py_ssize_t seg,
                               Py_ssize_t *size) noexcept:
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
        if out.address_of[start + n] != dest or length > seg or length == 0 \
                or total + length > GSO_MAX_BYTES:
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
    cdef Py_ssize_t pos = 0, m, i, j, used, run, size = 0, nbytes, r, k
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
                if gso and counts[0] > 1 and not isinstance(error, TimeoutError) \
                        and gso_refused(error):
                    gso = False              # the kernel or the route refuses GSO: plain from here
                    if w.state != NULL:
                        (<SocketState>w.state).gso_off = True
                    continue
                if pos == 0 or isinstance(error, TimeoutError) or not defer_error(w, error):
                    note_sent(error, pos)
                    raise
                return pos
            if r == IO_AGAIN:
                if send_cut_raises(w, pos):
                    raise_would_block_after(pos)
                return pos
            for k in range(r):
                pos += counts[k]
            out.sent = pos
        return pos
    finally:
        PyMem_Free(msgs)
        PyMem_Free(iov)
        PyMem_Free(counts)
        PyMem_Free(control)


# --- GRO and metadata ------------------------------------------------------------------------
# (the receive modes, RX_*, are in offload.pxd)

cdef int rx_mode(object sock, IoWait *w, bint gro, int family, int kind) except -1:
    """The socket's receive mode; with gro, UDP_GRO is set first if not yet tried (csock
    sockets only: a stdlib socket has nowhere to remember it)."""
    cdef int mode = rx_mode_of(w)
    if gro and w.state != NULL and not (mode & (RX_GRO | RX_GRO_REFUSED)) \
            and is_udp(family, kind, sock.proto):
        mode |= RX_GRO if set_int_option(w.fd, SOL_UDP, UDP_GRO, 1) else RX_GRO_REFUSED
        (<SocketState>w.state).rx_mode = mode
    return mode


def forget_gro(sock):
    """forget_gro(sock): UDP_GRO was turned off (setsockopt): recv_batch stops splitting and
    recv_batch_into takes the socket again. (Nothing for a socket that never had it.)"""
    cdef SocketState state = existing_state(sock)
    if state is not None:
        state.rx_mode &= ~(RX_GRO | RX_GRO_REFUSED)


def enable_gro(sock):
    """Set ``UDP_GRO`` on the socket now.

    ``recv_batch(gro=True)`` does it at its first call; datagrams queued before that are not
    coalesced. Once set, every ``recv_batch`` splits coalesced messages back into datagrams.

    Returns
    -------
    bool
        True when the kernel accepted the option (False on non-UDP sockets or old kernels).
    """
    cdef IoWait w
    cdef int family = 0, kind = 0
    io_begin(sock, &w)
    socket_family_type(sock, &family, &kind)
    return (rx_mode(sock, &w, True, family, kind) & RX_GRO) != 0


cdef list recv_batch_ext(object sock, IoWait *w, Py_ssize_t max_messages, Py_ssize_t bufsize,
                         int mode, int flags):
    """recv_batch with control messages: GRO splitting and metadata; flags are the first
    recvmmsg's (MSG_WAITFORONE, MSG_DONTWAIT too when it must not wait). Datagrams beyond
    max_messages (the rest of a coalesced message) wait in SocketState.pending for the next
    call (rx_mode is set only on a csock socket, so w.state is one), as do those an exception
    catches the call holding (batch_recv.pyx, keep)."""
    cdef BatchReceiver receiver
    cdef Py_ssize_t slot = max(bufsize, <Py_ssize_t>GRO_SLOT) if mode & RX_GRO else bufsize
    cdef Py_ssize_t per_call = min(max_messages, <Py_ssize_t>MMSG_MAX,
                                   max(<Py_ssize_t>1, MAX_SCRATCH // max(slot, 1)))
    cdef Py_ssize_t want, r
    if mode & RX_GRO:
        per_call = min(per_call, max(<Py_ssize_t>1, MAX_GRO_SCRATCH // slot))
    cdef list batch = None
    cdef SocketState state = <SocketState>w.state
    receiver = claimed_receiver(w)
    try:
        batch = take_kept(w, max_messages)
        if batch is None:
            batch = []
        else:
            w.timeout_ns = 0                  # something to return: take only what is queued
            flags = MSG_DONTWAIT
        while len(batch) < max_messages:
            want = min(per_call, max_messages - len(batch))
            receiver.prepare(want, slot)
            receiver.prepare_control(want, CONTROL_ROOM)
            try:
                r = receiver.receive(w, want, flags)
            except OSError as error:
                if not batch:
                    raise
                defer_error(w, error, received=True)
                break
            if r == IO_AGAIN:
                if not batch:
                    raise_would_block()
                break
            receiver.collect_ext(batch, r, bufsize)
            if r < want:
                break                         # the queue is drained
            flags = MSG_DONTWAIT              # more may be queued: take it without waiting
            w.timeout_ns = 0
        if len(batch) > max_messages:
            rest = batch[max_messages:]
            del batch[max_messages:]
            state.pending = rest if not state.pending else state.pending + rest
        run_handlers_before_return()
    except BaseException:
        keep(w, batch)
        raise
    finally:
        receiver.busy = False
    return batch


def pending_datagrams(sock):
    """pending_datagrams(sock) -> int: datagrams sock keeps for its next recv_batch (the rest
    of a split GRO message, a batch a signal handler's exception interrupted): poll and
    select cannot see them, an event loop asks here."""
    cdef SocketState state = existing_state(sock)
    return 0 if state is None or not state.pending else len(state.pending)
