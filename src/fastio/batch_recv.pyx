# recv_batch and recv_batch_into: recvmmsg(2) into a per-socket BatchReceiver's memory.
# BatchReceiver's fields and methods are declared in batch_recv.pxd.
cimport cython
from cpython.buffer cimport PyBuffer_Release
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.list cimport PyList_Append, PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.string cimport memcpy, memset, memcmp
from includes.socket cimport (mmsghdr, msghdr, sockaddr, sockaddr_storage,
                              MSG_WAITFORONE, MSG_DONTWAIT, MSG_TRUNC, MSG_CTRUNC, MSG_PEEK,
                              SOCK_SEQPACKET)
from includes.poll cimport POLLHUP, POLLRDHUP
from includes.socket cimport (cmsghdr, CMSG_FIRSTHDR, CMSG_NXTHDR, CMSG_DATA, CMSG_LEN, CMSG_SPACE,
                              AF_INET, AF_INET6)
from includes.offload cimport SOL_UDP, UDP_GRO
from includes.socket cimport SOL_SOCKET, SCM_TIMESTAMPNS, SCM_RIGHTS
from includes.timestamps cimport (SO_TIMESTAMP_OLD, SO_TIMESTAMPNS_OLD, SO_TIMESTAMP_NEW,
                                  SO_TIMESTAMPNS_NEW, SO_TIMESTAMPING_NEW)
from includes.inet cimport (IPPROTO_IP, IPPROTO_IPV6, IP_PKTINFO, IP_TOS, IPV6_PKTINFO,
                            IPV6_TCLASS, in_pktinfo, in6_pktinfo, inet_ntop, INET6_ADDRSTRLEN)
from posix.time cimport timespec


# --- receiving ------------------------------------------------------------------------------

cdef Py_ssize_t receive_messages(IoWait *w, mmsghdr *msgs, Py_ssize_t count, int flags,
                                 Py_ssize_t slot) except -1:
    """One recvmmsg(2) into count laid-out headers: how many messages came, or IO_AGAIN."""
    cdef MmsgOp op
    op.msgs = msgs
    op.count = <unsigned int>count
    op.flags = flags
    return io_call(w, sys_recvmmsg, &op, POLLIN, io_may_block(w, count * slot))


# --- datagrams taken from the kernel but not yet handed out ----------------------------------
# A socket keeps them in SocketState.pending, first in line for its next recv_batch: the rest
# of a split GRO message beyond max_messages (offload.pyx), and the batch of a call that an
# exception ended after recvmmsg(2) had taken it (a signal handler's: Ctrl-C). A stdlib socket
# has nowhere to keep them.

cdef list take_kept(IoWait *w, Py_ssize_t max_messages):
    """Up to max_messages of the datagrams the socket keeps, oldest first; None if none.
    EBADF on a closed socket (close() drops them; this covers a call in flight that kept
    some after it)."""
    cdef SocketState state = <SocketState>w.state if w.state != NULL else None
    cdef list kept
    if state is None or not state.pending:
        return None
    _check_still_open(w)
    kept = state.pending
    if len(kept) <= max_messages:
        state.pending = None
        return kept
    state.pending = kept[max_messages:]
    return kept[:max_messages]


cdef int keep(IoWait *w, list batch) except -1:
    """An exception ends a receive that holds batch: the socket keeps it, before what it kept
    already (the call took batch's head from there). Dropped on a closed socket."""
    cdef SocketState state
    if not batch or w.state == NULL or not fd_still_ours(w):
        return 0
    state = <SocketState>w.state
    state.pending = batch + state.pending if state.pending else batch
    return 0


cdef int run_handlers_before_return() except -1:
    """Run the handlers of signals that landed during the call now, while its batch can be
    kept: after the return the interpreter would run them with the batch on its stack, and
    drop the batch if one raises."""
    return PyErr_CheckSignals()


# --- SOCK_SEQPACKET: an empty record or the end of stream? -----------------------------------
# recv(2) returns 0 for both, and at end of stream every further recv returns 0 at once, so a
# recvmmsg(2) that reaches the end fills the rest of its batch with zero-length messages. Only
# such a run at the END of a batch can hold the end of stream: zero-length messages followed by
# a non-empty one, or after which the kernel would have blocked (a short batch), are records.
# For a run that ends a full batch, the peer's shutdown state decides: no POLLRDHUP, no end
# (the state only ever goes from open to shut); POLLRDHUP and a record queued next (a peek),
# still records. Otherwise the run holds the end of stream, and the records in it cannot be
# told from the end reads that followed them: a zero-length record right before the peer's
# close is taken for the end (recv_batch's docstring).

cdef bint peer_has_shut_down(int fd) noexcept nogil:
    """True once the peer has shut down writing (or this end reading): POLLRDHUP, zero wait."""
    cdef pollfd p
    p.fd = fd
    p.events = POLLRDHUP
    p.revents = 0
    return poll(&p, 1, 0) == 1 and (p.revents & (POLLRDHUP | POLLHUP)) != 0


cdef bint option_set(int fd, int option) noexcept nogil:
    """Whether a SOL_SOCKET option reads nonzero (an int, or a struct that starts with one:
    SO_TIMESTAMPING's flags); False when the kernel has no such option."""
    cdef int value = 0
    cdef socklen_t size = sizeof(value)
    return getsockopt(fd, SOL_SOCKET, option, &value, &size) == 0 and value != 0


cdef int peek_timestamp_option(int fd) noexcept nogil:
    """The option record_next turns on for its peek: 0 when the kernel already attaches a
    receive timestamp to each record (SO_TIMESTAMP or SO_TIMESTAMPNS, either time format: each
    reads set only for its own variant, so all four are asked). Otherwise SO_TIMESTAMPNS, in
    the format SO_TIMESTAMPING's flags were set in: turning it on sets the socket's one format
    flag, and turning it off (which clears both timestamp options) leaves that flag."""
    if option_set(fd, SO_TIMESTAMP_OLD) or option_set(fd, SO_TIMESTAMPNS_OLD) \
            or option_set(fd, SO_TIMESTAMP_NEW) or option_set(fd, SO_TIMESTAMPNS_NEW):
        return 0
    return SO_TIMESTAMPNS_NEW if option_set(fd, SO_TIMESTAMPING_NEW) else SO_TIMESTAMPNS_OLD


cdef union PeekControl:
    cmsghdr header                          # (aligned as the kernel writes control messages)
    char room[64]                           # more than one timestamp's room on any ABI


cdef bint record_next(int fd) noexcept nogil:
    """True when a record, even a zero-length one, is queued next (a peek: nothing is taken).
    A zero-length record and the end of stream both read as 0 bytes, but only a record has a
    receive timestamp: the peek asks for it, turning SO_TIMESTAMPNS on for the peek if no
    timestamp option was on (a record sent before still gets one: socket(7),
    __sock_recv_timestamp), and any control message at all is a record's. It offers room for
    one timestamp and no more: a peek installs the descriptors a record carries (SCM_RIGHTS)
    into the process, and only where they fit (else MSG_CTRUNC)."""
    cdef int on = 1, off = 0
    cdef int option = peek_timestamp_option(fd)
    cdef char byte = 0
    cdef PeekControl control
    cdef iovec iov
    cdef msghdr msg
    cdef ssize_t r
    if option and setsockopt(fd, SOL_SOCKET, option, &on, sizeof(on)) < 0:
        return False
    iov.iov_base = &byte
    iov.iov_len = 1
    memset(&msg, 0, sizeof(msg))
    msg.msg_iov = &iov
    msg.msg_iovlen = 1
    msg.msg_control = &control
    msg.msg_controllen = CMSG_SPACE(sizeof(timespec))
    r = recvmsg(fd, &msg, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC)
    if option:
        setsockopt(fd, SOL_SOCKET, option, &off, sizeof(off))
    return r > 0 or (r == 0 and msg.msg_controllen > 0)


cdef Py_ssize_t records_before_end(int fd, mmsghdr *msgs, Py_ssize_t received,
                                   Py_ssize_t asked) noexcept:
    """How many of the `received` messages (of `asked`) are records; the rest, a run of
    zero-length messages at the end, is the end of stream (see above)."""
    cdef Py_ssize_t end = received
    while end > 0 and msgs[end - 1].msg_len == 0:
        end -= 1
    if end == received or received < asked:
        return received
    if not peer_has_shut_down(fd) or record_next(fd):
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
    """Per-socket receive state: headers, iovecs and address slots for recvmmsg(2) (room for
    `capacity` messages), and a scratch Arena of `scratch_slots` slots of `slot` bytes,
    whose headers are laid out once. Each
    call receives into the slots from `next_free` on, so views handed out by earlier calls
    keep their slots and a call costs no set-up; the scratch starts over at slot 0 when no
    view refers to it, and is replaced when it is full and still referred to (by the spare,
    the one before it, once that is free again). Small batches are compacted into a
    right-sized arena so that held views do not pin the whole scratch."""
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
        if self.controls == NULL or self.control_space != space \
                or self.control_capacity < self.capacity:
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
                or count > self.scratch_slots \
                or (self.next_free + count > self.scratch_slots
                    and not arena_is_private(<PyObject *>self.scratch)):
            # Sized from this call (not from the header count earlier calls with smaller
            # slots left: 4096 of them at 1 MiB each would be 4 GiB).
            self.renew_scratch(want * slot)
            self.scratch_slots = min(self.capacity, self.scratch.size // slot) if slot > 0 \
                else self.capacity
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
        if self.scratch is not None and arena_is_private(<PyObject *>self.scratch) \
                and self.scratch.size >= size:
            return 0
        if self.spare is not None and arena_is_private(<PyObject *>self.spare) \
                and self.spare.size >= size:
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
        self.addresses.fd = w.fd                 # (AF_PACKET senders: named in its namespace)
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
        address = self.addresses.decode(<sockaddr *>&self.names[i],
                                        self.msgs[i].msg_hdr.msg_namelen)
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
        self.control_cut = False
        for i in range(self.first, end):
            if self.msgs[i].msg_hdr.msg_flags & MSG_CTRUNC:
                self.control_cut = True
            length = self.msgs[i].msg_len
            if arena is self.scratch:
                view = make_view(arena, <char *>self.iovs[i].iov_base, length)
            else:
                memcpy(at, self.iovs[i].iov_base, length)
                view = make_view(arena, at, length)
                at += length
            d = make_datagram(view, self.sender(i),
                              (self.msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0)
            Py_INCREF(d)                          # PyList_SET_ITEM steals a reference
            PyList_SET_ITEM(batch, i - self.first, d)
        return batch

    cdef object destination_text(self, int family, const void *address):
        """ip_text(), the last one's string again when the address is the same."""
        cdef size_t size = 4 if family == AF_INET else 16
        if self.last_destination_text is not None and self.last_destination_family == family \
                and memcmp(self.last_destination, address, size) == 0:
            return self.last_destination_text
        memcpy(self.last_destination, address, size)
        self.last_destination_family = family
        self.last_destination_text = ip_text(family, address)
        return self.last_destination_text

    cdef int collect_ext(self, list into, Py_ssize_t received, Py_ssize_t bufsize) except -1:
        """collect() for GRO and metadata: reads each message's control messages, splits a
        coalesced (UDP_GRO) message into its datagrams of gso_size bytes (the last may be
        shorter; all share the sender's address and metadata) and cuts each at bufsize."""
        cdef Py_ssize_t i, total = 0, length, off, n
        cdef Arena arena = self.scratch
        cdef char *at = NULL
        cdef char *base
        cdef int gso
        cdef msghdr *hdr
        cdef ControlInfo info
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
            read_control(hdr.msg_control, hdr.msg_controllen, &info)
            gso = info.gso
            timestamp = info.timestamp if info.has_timestamp else None
            destination = interface = None
            if info.destination_family:
                destination = self.destination_text(info.destination_family, info.destination)
                interface = info.interface
            tos = info.tos if info.tos >= 0 else None
            cut = (hdr.msg_flags & MSG_TRUNC) != 0
            if gso <= 0 or gso >= length:
                gso = length
            off = 0
            while True:
                n = min(<Py_ssize_t>gso, length - off)
                d = make_datagram(make_view(arena, base + off, min(n, bufsize)), address,
                                  cut or n > bufsize)
                d.timestamp = timestamp
                d.destination = destination
                d.interface = interface
                d.tos = tos
                PyList_Append(into, d)
                off += n
                if off >= length:
                    break
        return 0


cdef void read_control(const void *control, size_t length, ControlInfo *info) noexcept:
    """What a received message's control messages say: UDP_GRO's segment size and the
    metadata enable_metadata asks for (the fields not reported left at 0, or -1 for tos).
    Descriptors an AF_UNIX peer passed (SCM_RIGHTS), which the kernel installed in this
    process because the receive offered control room, are closed: nothing hands them out,
    and a peer could otherwise fill the fd table (the stdlib's recvfrom offers no room)."""
    cdef msghdr hdr
    cdef cmsghdr *cm
    cdef timespec ts
    cdef in_pktinfo info4
    cdef in6_pktinfo info6
    memset(info, 0, sizeof(ControlInfo))
    info.tos = -1
    memset(&hdr, 0, sizeof(hdr))
    hdr.msg_control = <void *>control
    hdr.msg_controllen = length
    cm = CMSG_FIRSTHDR(&hdr) if length > 0 else NULL
    while cm != NULL:
        # (each read only from a message that holds it: one cut short, MSG_CTRUNC, does not)
        if cm.cmsg_level == SOL_UDP and cm.cmsg_type == UDP_GRO and holds(cm, sizeof(int)):
            memcpy(&info.gso, CMSG_DATA(cm), sizeof(int))
        elif (cm.cmsg_level == SOL_SOCKET and cm.cmsg_type == SCM_TIMESTAMPNS
                and holds(cm, sizeof(ts))):
            memcpy(&ts, CMSG_DATA(cm), sizeof(ts))
            info.has_timestamp = True
            info.timestamp = ts.tv_sec + ts.tv_nsec * 1e-9
        elif (cm.cmsg_level == IPPROTO_IP and cm.cmsg_type == IP_PKTINFO
                and holds(cm, sizeof(info4))):
            memcpy(&info4, CMSG_DATA(cm), sizeof(info4))
            set_destination(info, AF_INET, &info4.ipi_addr, 4, info4.ipi_ifindex)
        elif (cm.cmsg_level == IPPROTO_IPV6 and cm.cmsg_type == IPV6_PKTINFO
                and holds(cm, sizeof(info6))):
            memcpy(&info6, CMSG_DATA(cm), sizeof(info6))
            set_destination(info, AF_INET6, &info6.ipi6_addr, 16, info6.ipi6_ifindex)
        elif cm.cmsg_level == IPPROTO_IP and cm.cmsg_type == IP_TOS and holds(cm, 1):
            info.tos = (<unsigned char *>CMSG_DATA(cm))[0]
        elif (cm.cmsg_level == IPPROTO_IPV6 and cm.cmsg_type == IPV6_TCLASS
                and holds(cm, sizeof(int))):
            memcpy(&info.tos, CMSG_DATA(cm), sizeof(int))
        elif cm.cmsg_level == SOL_SOCKET and cm.cmsg_type == SCM_RIGHTS:
            close_passed_fds(cm, <const char *>control + length)
        cm = CMSG_NXTHDR(&hdr, cm)


cdef void close_passed_fds(const cmsghdr *cm, const char *end) noexcept:
    """close(2) each descriptor of an SCM_RIGHTS message (as many as its length, within the
    control data, holds)."""
    cdef const char *data = <const char *>CMSG_DATA(cm)
    cdef const char *stop = <const char *>cm + cm.cmsg_len
    cdef int fd = -1
    if stop > end:
        stop = end
    while data + sizeof(int) <= stop:
        memcpy(&fd, data, sizeof(int))
        close_fd(fd)
        data += sizeof(int)


cdef inline bint holds(const cmsghdr *cm, size_t size) noexcept:
    return cm.cmsg_len >= CMSG_LEN(size)


cdef inline void set_destination(ControlInfo *info, int family, const void *address,
                                 size_t size, int interface) noexcept:
    info.destination_family = family
    memcpy(info.destination, address, size)
    info.interface = interface


cdef object ip_text(int family, const void *address):
    """The IP address a datagram was sent to as text (inet_ntop(3)), None if it has none."""
    cdef char text[INET6_ADDRSTRLEN]
    if inet_ntop(family, address, text, sizeof(text)) == NULL:
        return None
    return text.decode("ascii")


def scratch_allocations(sock):
    """scratch_allocations(sock) -> int: how many scratch arenas sock's batch receiver has
    taken so far (new receive memory, as opposed to memory used again)."""
    cdef SocketState state = existing_state(sock)
    if state is None or state.receiver is None:
        return 0
    return (<BatchReceiver>state.receiver).scratches_made


cdef BatchReceiver claimed_receiver(IoWait *w):
    """The socket's BatchReceiver (made on first use), marked busy for this call (the caller
    clears busy); a fresh one while another thread's call is using it, or for a stdlib
    socket. Busy from before a fork() is no call of this process's: the child takes it."""
    cdef SocketState state = <SocketState>w.state if w.state != NULL else None
    cdef BatchReceiver receiver = None
    if state is not None and state.receiver is not None:
        receiver = <BatchReceiver>state.receiver
        if receiver.busy and receiver.busy_generation == _fork_generation:
            receiver = BatchReceiver()
    if receiver is None:
        receiver = BatchReceiver()
        if state is not None:
            state.receiver = receiver
    receiver.busy = True
    receiver.busy_generation = _fork_generation
    return receiver


cdef int notice_gro_set_elsewhere(object sock, IoWait *w, int family, int kind) except -1:
    """A plain receive (no control room) got MSG_CTRUNC: on a UDP socket, the kernel had a
    UDP_GRO segment size to give, so GRO was set where csock did not see it (on a dup, by a
    stdlib socket on the fd). The message that told is whole, its boundaries unknown; from
    the next call on, recv_batch splits (rx_mode, as enable_gro)."""
    cdef int on = 0
    cdef socklen_t size = sizeof(on)
    if w.state == NULL or not is_udp(family, kind, sock.proto):
        return 0
    if getsockopt(w.fd, SOL_UDP, UDP_GRO, &on, &size) == 0 and on:
        (<SocketState>w.state).rx_mode |= RX_GRO
    return 0


def check_recv_limits(Py_ssize_t max_messages, Py_ssize_t bufsize, bint records=False, /):
    """The ValueError recv_batch raises for max_messages or bufsize (records: on a SOCK_SEQPACKET
    socket, where bufsize 0 would read every record as empty, its data dropped)."""
    recv_limits_checked(max_messages, bufsize, records)


# (recv_batch's own check: a C call, not a Python one, on every batch)
cdef int recv_limits_checked(Py_ssize_t max_messages, Py_ssize_t bufsize, bint records) except -1:
    if max_messages < 1 or max_messages > MAX_RECV_MESSAGES:
        raise ValueError(f"max_messages must be between 1 and {MAX_RECV_MESSAGES}")
    if bufsize < records or bufsize > MAX_BUFSIZE:
        raise ValueError(f"bufsize must be between {<int>records} and {MAX_BUFSIZE}"
                         + (" on a SOCK_SEQPACKET socket" if records else ""))
    return 0


def recv_batch(sock, Py_ssize_t max_messages=64, Py_ssize_t bufsize=65535, *, bint gro=False,
               bint wait=True):
    """Receive every queued datagram (or record), up to max_messages, with one recvmmsg(2).

    Blocks (within the socket's timeout) until one datagram is queued, then takes all that
    are (``MSG_WAITFORONE``); with ``wait=False``, takes only what is queued now.

    Parameters
    ----------
    max_messages : int, optional
        The most datagrams to return.
    bufsize : int, optional
        The most bytes kept of each datagram. A longer one is cut and flagged ``truncated``.
        ``bufsize=0`` on a datagram socket takes each datagram as an empty Datagram with its
        address, ``truncated`` unless it was empty (as ``recvfrom(0)``); on SOCK_SEQPACKET it
        is a ValueError (every record would come back empty).
    gro : bool, optional
        UDP (ignored elsewhere): set ``UDP_GRO`` (once; it stays set) so the kernel may hand
        over runs of datagrams from one sender as one coalesced message, which this call splits
        back: the caller sees the same datagrams, order and addresses as without GRO.
        max_messages still counts datagrams: the rest of a coalesced message is kept on the
        socket (see Notes; recv/recvfrom on a GRO socket may return coalesced messages).
        UDP_GRO set where this socket cannot see it (by another holder of the file) is
        noticed at the first coalesced message, which comes back whole.
    wait : bool, optional
        False: take only what is queued now (``MSG_DONTWAIT``), and raise BlockingIOError at
        once when nothing is, whatever the socket's timeout.

    Returns
    -------
    list of Datagram
        Each with ``.data`` (a read-only view, never overwritten while held), ``.address``
        and ``.truncated``. On SOCK_SEQPACKET, ``[]`` is the end of stream (records before it
        are returned first) and a zero-length record is an empty Datagram.

    Raises
    ------
    BlockingIOError
        Non-blocking (or ``wait=False``), and nothing is queued.
    TimeoutError
        The socket's timeout passed with nothing received.
    ValueError
        max_messages or bufsize out of range, or bufsize 0 on SOCK_SEQPACKET.
    OSError
        recvmmsg(2)'s error, as the stdlib's subclass. One that comes after some datagrams
        (from a further recvmmsg of the same call) is raised by the next call instead, as
        recvmmsg(2) itself saves it: the datagrams are returned.

    Notes
    -----
    One system call per batch; the data lands in a receive arena reused once no view of it is
    held, so a batch costs one Datagram and one view per datagram and no copy.

    Datagrams the call took from the kernel are not lost to an exception: when a signal
    handler raises during the call (``KeyboardInterrupt``), the exception propagates and the
    socket keeps them. Handlers for signals that land during the call run before it returns,
    so that this holds for them too (one landing in its last instructions runs after the
    return, as with the stdlib's ``recv``). The socket returns what it keeps, in order, first
    in its next ``recv_batch`` (or ``recv_records``), without waiting; other receive calls,
    select and poll do not see it. A stdlib socket has nowhere to keep them.

    SOCK_SEQPACKET: recv(2) returns 0 for a zero-length record and for the end of stream
    alike, so csock asks the peer's shutdown state (poll(2) ``POLLRDHUP``) and, once the peer
    has shut down, peeks at the next record. What stays ambiguous, once the peer has shut
    down: zero-length records with nothing but zero-length records after them before the
    close (typically one sent right before close()) read as the end of stream, and so do
    zero-length records that end a full batch when the record queued next is zero-length too.
    """
    cdef IoWait w
    cdef BatchReceiver receiver
    cdef Py_ssize_t per_call, want, r, n, got = 0
    cdef int family = 0, kind = 0, flags = MSG_WAITFORONE
    cdef list batch = None, part
    cdef bint records
    recv_limits_checked(max_messages, bufsize, False)
    io_begin(sock, &w)
    raise_deferred_error(&w, received=True)
    if not wait:
        w.timeout_ns = 0                    # IO_AGAIN at once, not a poll until the deadline
        flags |= MSG_DONTWAIT               # (a blocking fd would wait in recvmmsg itself)
    socket_family_type(sock, &family, &kind)
    records = kind == SOCK_SEQPACKET
    if records:
        recv_limits_checked(max_messages, bufsize, True)
    if rx_mode_of(&w) or gro:
        mode = rx_mode(sock, &w, gro, family, kind)
        if mode & RX_EXTENDED:
            return recv_batch_ext(sock, &w, max_messages, bufsize, mode, flags)
    per_call = min(max_messages, <Py_ssize_t>MMSG_MAX,
                   max(<Py_ssize_t>1, MAX_SCRATCH // max(bufsize, 1)))
    receiver = claimed_receiver(&w)
    try:
        batch = take_kept(&w, max_messages)
        if batch is not None:
            got = len(batch)
            w.timeout_ns = 0                # something to return: take only what is queued
            flags |= MSG_DONTWAIT
        while got < max_messages:
            want = min(per_call, max_messages - got)
            receiver.prepare(want, bufsize, not records)
            try:
                r = receiver.receive(&w, want, flags)
            except OSError as error:
                if batch is None:
                    raise
                # what came is returned; a stdlib socket's error is dropped (nowhere to keep it)
                defer_error(&w, error, received=True)
                break
            if r == IO_AGAIN:
                if batch is None:
                    raise_would_block()
                break
            n = r
            if records and fd_still_ours(&w):      # (closed meanwhile: what came is records)
                n = records_before_end(w.fd, receiver.msgs + receiver.first, r, want)
            part = receiver.collect(n)
            if receiver.control_cut:
                notice_gro_set_elsewhere(sock, &w, family, kind)
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
        run_handlers_before_return()
    except BaseException:
        keep(&w, batch)
        raise
    finally:
        receiver.busy = False
    return batch


def recv_batch_into(sock, buffer, bufsize, max_messages=MMSG_MAX):
    """Receive queued datagrams into the caller's buffer with one recvmmsg(2); return their lengths.

    ``recv_batch`` without an object per message: message i lands at ``buffer[i * bufsize:]``.
    Blocks as ``recv_batch`` does (within the socket's timeout) until one message, then takes
    every one queued, up to max_messages, ``len(buffer) // bufsize`` and 1024.

    Parameters
    ----------
    buffer : writable bytes-like
        The caller's: the next call overwrites it.
    bufsize : int
        The slot size of each message.
    max_messages : int, optional
        The most messages to take.

    Returns
    -------
    list of int
        Each message's length. A message longer than bufsize is cut to bufsize bytes and its
        length is the full one (``MSG_TRUNC``): a length above bufsize is how truncation shows.
        No senders' addresses. On SOCK_SEQPACKET, ``[]`` is the end of stream and a zero-length
        record is a length of 0 (told apart as ``recv_batch`` does).

    Raises
    ------
    BlockingIOError
        Non-blocking, and nothing is queued.
    TimeoutError
        The socket's timeout passed with nothing received.
    ValueError
        The buffer holds no slot of bufsize bytes, or the socket has ``UDP_GRO`` set
        (coalesced messages need ``recv_batch`` to split them).
    TypeError
        The buffer is not writable (read-only, released, not contiguous), as for
        ``recv_into``: checked before the other arguments and the socket.

    Notes
    -----
    One system call and one list of ints per batch; with the same buffer each time, no other
    set-up.
    """
    cdef IoWait w
    cdef Py_buffer view
    cdef BatchReceiver receiver
    cdef mmsghdr *msgs
    cdef Py_ssize_t count, r, size, most
    cdef int family = 0, kind = 0
    get_writable_buffer(buffer, &view, "recv_batch_into")     # first, as recv_into's
    try:
        size = bufsize
        most = max_messages
        if size < 1 or size > MAX_BUFSIZE:
            raise ValueError(f"bufsize must be between 1 and {MAX_BUFSIZE}")
        if most < 1:
            raise ValueError("max_messages must be at least 1")
        io_begin(sock, &w)
        raise_deferred_error(&w, received=True)
        socket_family_type(sock, &family, &kind)
        if rx_mode_of(&w) & RX_GRO:
            raise ValueError("recv_batch_into cannot split UDP_GRO-coalesced messages: "
                             "use recv_batch")
        count = min(most, view.len // size, <Py_ssize_t>MMSG_MAX)
        if count < 1:
            raise ValueError(f"the buffer ({view.len} bytes) is smaller than bufsize ({size})")
        receiver = claimed_receiver(&w)
        try:
            msgs = receiver.lay_out_into(<char *>view.buf, size, count)
            r = receive_messages(&w, msgs, count, MSG_WAITFORONE | MSG_TRUNC, size)
            if r == IO_AGAIN:
                raise_would_block()
            if kind == SOCK_SEQPACKET and fd_still_ours(&w):   # zero-length messages at the end:
                r = records_before_end(w.fd, msgs, r, count)        # records or the end?
            return [msgs[i].msg_len for i in range(r)]
        finally:
            receiver.busy = False
    finally:
        PyBuffer_Release(&view)
