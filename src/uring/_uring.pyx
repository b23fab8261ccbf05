# cython: language_level=3, auto_pickle=False
# (Cython's generated __setstate__ would trust its argument: Completion().__setstate__((None,))
# crashed the interpreter; none of these objects can cross a process anyway)
"""csock._uring: an io_uring Ring over the raw kernel ABI (public face: csock.uring).

One Ring is one io_uring instance: a submission queue (SQ) of requests and a completion queue
(CQ) of results, both mmapped and shared with the kernel, so that requests for any number of
sockets go in, and their results come out, with one io_uring_enter(2). Receives take their
memory from a provided buffer ring (BufferPool): the kernel picks a free buffer per message,
and the ReceivedView handed out keeps that buffer until it is released, then gives it back.

Every request holds its socket's in-flight reference (csock._fastio inflight_hold) from the
moment its SQE is written until its last completion; a close() meanwhile defers close(2) and
cancels the socket's requests (the close hook below). A stdlib socket has no such count (its
close() is the stdlib's): its request names a dup of the fd instead, closed at the request's
last completion, so that the number is never the one another socket takes meanwhile. The SQ,
the CQ and the buffer ring are only touched with the GIL held; the GIL is released only to
sleep in io_uring_enter.
"""
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcmp, memcpy, memset
from libc.errno cimport (
    errno, EBADF, EINTR, EAGAIN, EALREADY, EBUSY, ENOENT, ETIME, EINVAL, ENOSYS, ENOBUFS, EPERM,
)
from posix.unistd cimport close as close_fd, getpid
from posix.types cimport pid_t
from posix.mman cimport (
    mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED,
    MAP_NORESERVE,
)
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.exc cimport PyErr_CheckSignals
from includes.socket cimport (
    msghdr, sockaddr, sockaddr_storage, socklen_t, MSG_DONTWAIT, MSG_NOSIGNAL, MSG_TRUNC,
    MSG_WAITALL, AF_PACKET, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM, SOCK_SEQPACKET,
)
from includes.uio cimport iovec
from includes.poll cimport poll, pollfd, POLLIN
from includes.uring cimport *
from csock._fastio cimport (
    CONTROL_ROOM, ControlInfo, MessageView, SocketState, address_from_sockaddr_on,
    address_to_sockaddr_on, datagram_of, framed_feed, framed_lend, framed_lent_filled,
    inflight_hold, inflight_release, read_control, set_close_hook, state_of,
)

import os as _os
import weakref as _weakref
import _socket

from csock._fastio import FramedStream as _FramedStream

# This process's pid, for the checks that refuse a forked child the parent's ring: getpid(2)
# is a system call on every glibc since 2.25, and those checks run on every request and view.
cdef pid_t _current_pid = getpid()


def _after_fork_in_child():
    global _current_pid
    _current_pid = getpid()


_os.register_at_fork(after_in_child=_after_fork_in_child)

# A socket's family, type and proto as the C socket object keeps them: the stdlib's properties
# convert each to an enum, which costs more than the rest of queueing a send.
_raw_family = _socket.socket.family.__get__
_raw_type = _socket.socket.type.__get__
_raw_proto = _socket.socket.proto.__get__
from operator import index as _index

cdef extern from *:
    """
    #include <sys/socket.h>
    #ifndef SOCK_CLOEXEC
    #define SOCK_CLOEXEC 02000000
    #endif
    """
    enum:
        SOCK_CLOEXEC


cdef extern from "<fcntl.h>" nogil:
    int fcntl(int fd, int cmd, ...)
    enum: F_DUPFD_CLOEXEC


cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clock, timespec *ts)
    enum: CLOCK_MONOTONIC


cdef inline int64_t _now_ns() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


# A cancel's completion carries the id of the request it cancels, with this bit set: a cancel
# that found the request running (EALREADY) or not yet armed (ENOENT) is sent again.
cdef uint64_t CANCEL_BIT = (<uint64_t>1) << 63


cdef enum Kind:
    RECV = 1
    RECVMSG
    SEND
    SENDMSG
    SEND_ZC
    ACCEPT
    POLL

cdef dict _KIND_NAMES = {RECV: "recv", RECVMSG: "recvmsg", SEND: "send", SENDMSG: "sendmsg",
                         SEND_ZC: "send_zc", ACCEPT: "accept", POLL: "poll"}

cdef enum:
    SQ_CQ_OVERFLOW = 1 << 1     # IORING_SQ_CQ_OVERFLOW in the SQ ring's flags
    SQ_TASKRUN = 1 << 2         # IORING_SQ_TASKRUN: completions wait for an enter to post
    NAME_ROOM = 128             # sizeof(struct sockaddr_storage): a multishot recvmsg's name
    RECVMSG_OUT = 16            # sizeof(struct io_uring_recvmsg_out)
    # A multishot recvmsg's buffer: the io_uring_recvmsg_out, the name's room, the control
    # messages' room, then the payload. The room is always the most csock asks a socket
    # for (UDP_GRO's and enable_metadata's): whoever set the options, none is left out.
    NAME_AT = RECVMSG_OUT
    CONTROL_AT = RECVMSG_OUT + NAME_ROOM
    PAYLOAD_AT = CONTROL_AT + CONTROL_ROOM
    CANCEL_USER_DATA = 0        # a NOP's own completion: nothing waits for it
    BUFFER_GROUP = 0
    # Bytes after which the kernel ends a multishot recv (csock arms it again at the reap):
    # without it, one stream whose peer keeps sending took every buffer between two reaps.
    RECV_LIMIT = 256 * 1024
    # The most one send(2) moves (MAX_RW_COUNT, INT_MAX rounded down to a page), and what a
    # send SQE asks for at most: its length field is 32 bits, so a 4 GiB + 16 byte buffer
    # would go out as 16 bytes. The completion's value says how much went, as send(2)'s does.
    SEND_MAX = 0x7FFFF000

# What a recvmsg datagram's buffer holds before its payload (the io_uring_recvmsg_out, room
# for the sender's address and for control messages: UDP_GRO's, and the metadata
# enable_metadata asks for): a buffer of buffer_size bytes holds buffer_size minus this.
RECVMSG_HEADROOM = PAYLOAD_AT


cdef int raise_errno(int err) except -1:
    raise OSError(err, _os.strerror(err))


cdef object os_error(int err):
    return OSError(err, _os.strerror(err))


# --- Provided buffers --------------------------------------------------------------------

# Bytes of buffers in the ring at a time (more after a receive ran out). The ring is first in,
# first out: with all 16 MiB of 512 × 32 KiB in it, the kernel wrote each buffer cold.
cdef enum:
    HOT_BYTES = 2 * 1024 * 1024


@cython.final
cdef class BufferPool:
    """A provided buffer ring (IORING_REGISTER_PBUF_RING): count buffers of size bytes that
    the kernel fills for receives which ask for a buffer, without a system call per buffer.
    Only `offered` of them are in the ring at a time, the ones given back last first (their
    memory is still in the CPU's cache); a receive that finds none (ENOBUFS) doubles it.
    The buffers are mapped a chunk at a time, when one of a chunk is first put in the ring,
    so that memory, and address space, follow the buffers used (4,096 of 32 KiB would be
    128 MiB a loop, counted whole by RLIMIT_AS and by strict overcommit).
    Lives as long as the last ReceivedView into it, even after its Ring closed."""
    cdef char **chunks                  # chunk i holds buffers i << chunk_shift and on (or NULL)
    cdef unsigned chunk_shift
    cdef unsigned chunk_mask
    cdef size_t chunk_size
    cdef csock_uring_buf *entries
    cdef uint16_t *spare                # buffers given back and not in the ring: a stack
    cdef size_t entries_size
    cdef readonly Py_ssize_t buffer_size
    cdef readonly unsigned count
    cdef readonly unsigned offered      # buffers kept in the ring (until a receive ran out)
    cdef readonly unsigned mapped       # buffers whose chunk is mapped
    cdef unsigned in_ring               # put in the ring, not yet seen filled by a completion
    cdef unsigned spares
    cdef uint16_t tail                  # the next entry to fill (the ring's tail, ours)
    cdef uint16_t mask
    cdef bint registered                # the ring still reads it (not after Ring.close)
    cdef bint grew                      # offered was doubled in this reap already
    cdef pid_t pid                      # a forked child's copy goes back to no ring
    cdef readonly Py_ssize_t outstanding   # buffers handed out in views, not yet back

    def __cinit__(self):
        self.entries = <csock_uring_buf *>MAP_FAILED

    cdef int allocate(self, unsigned count, Py_ssize_t buffer_size) except -1:
        cdef unsigned bid
        self.count = count
        self.mask = <uint16_t>(count - 1)
        self.buffer_size = buffer_size
        self.offered = <unsigned>min(<Py_ssize_t>count, max(16, HOT_BYTES // buffer_size))
        # A chunk is the largest power of two of buffers not above the first offer (count
        # is a power of two, so the chunks tile it).
        while (2u << self.chunk_shift) <= self.offered:
            self.chunk_shift += 1
        self.chunk_mask = (1u << self.chunk_shift) - 1
        self.chunk_size = (<size_t>1 << self.chunk_shift) * <size_t>buffer_size
        self.entries_size = <size_t>count * sizeof(csock_uring_buf)
        self.pid = _current_pid
        self.spare = <uint16_t *>PyMem_Calloc(count, sizeof(uint16_t))
        self.chunks = <char **>PyMem_Calloc(count >> self.chunk_shift, sizeof(char *))
        if self.spare == NULL or self.chunks == NULL:
            raise MemoryError()
        # The ring itself must be page-aligned: mmap gives that.
        self.entries = <csock_uring_buf *>mmap(NULL, self.entries_size, PROT_READ | PROT_WRITE,
                                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if <void *>self.entries == MAP_FAILED:
            raise_errno(errno)
        for bid in range(count - 1, -1, -1):
            self.spare[self.spares] = <uint16_t>bid     # buffer 0 on top
            self.spares += 1
        if not self.map_chunk(0):
            raise_errno(errno)
        self.fill_ring()                        # (registered after this returns)
        return 0

    cdef bint map_chunk(self, unsigned chunk) noexcept:
        """Map the chunk's memory if it is not yet; False (errno set) if mmap failed."""
        if self.chunks[chunk] != NULL:
            return True
        # A small message touches one page of its buffer: reserve no swap for the rest
        # (strict overcommit reserves it anyway).
        cdef void *memory = mmap(NULL, self.chunk_size, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        if memory == MAP_FAILED:
            return False
        self.chunks[chunk] = <char *>memory
        self.mapped += self.chunk_mask + 1
        return True

    cdef inline char *buffer(self, uint16_t bid) noexcept:
        return (self.chunks[bid >> self.chunk_shift]
                + <size_t>(bid & self.chunk_mask) * <size_t>self.buffer_size)

    cdef inline void put(self, uint16_t bid) noexcept:
        cdef csock_uring_buf *entry = &self.entries[self.tail & self.mask]
        entry.addr = <uint64_t><size_t>self.buffer(bid)
        entry.len = <uint32_t>self.buffer_size
        entry.bid = bid
        self.tail += 1
        self.in_ring += 1

    cdef inline void publish(self) noexcept:
        # The tail is entry 0's resv field (struct io_uring_buf_ring).
        csock_store_release16(&self.entries[0].resv, self.tail)

    cdef void fill_ring(self) noexcept:
        """Put spare buffers in the ring, the last given back first, until it holds offered
        (or a chunk they are in cannot be mapped: receives meet ENOBUFS, and try again)."""
        cdef bint put_any = False
        cdef uint16_t bid
        while self.in_ring < self.offered and self.spares > 0:
            bid = self.spare[self.spares - 1]
            if not self.map_chunk(bid >> self.chunk_shift):
                break
            self.spares -= 1
            self.put(bid)
            put_any = True
        if put_any:
            self.publish()

    cdef inline void top_up(self) noexcept:
        """fill_ring() while the kernel still reads the ring, and only in the process it is in."""
        if self.registered and self.pid == _current_pid:
            self.fill_ring()

    cdef void filled(self) noexcept:
        """A completion says the kernel took a buffer out of the ring."""
        if self.in_ring > 0:
            self.in_ring -= 1
        self.top_up()

    cdef void ran_out(self) noexcept:
        """A receive found the ring empty (ENOBUFS): offer twice as many from now on, once
        per reap (a reap of 200 such receives had doubled it to every buffer, all touched in
        turn from then on)."""
        if not self.grew:
            self.grew = True
            self.offered = min(self.count, 2 * self.offered)
        self.top_up()

    cdef void give_back(self, uint16_t bid) noexcept:
        """The kernel may fill buffer bid again (no view holds it)."""
        if self.spares < self.count:            # (always: each buffer is given back once)
            self.spare[self.spares] = bid
            self.spares += 1
        self.top_up()

    cdef void recycle(self, uint16_t bid) noexcept:
        """A view into buffer bid was released: the kernel may fill the buffer again."""
        self.outstanding -= 1
        self.give_back(bid)

    def __dealloc__(self):
        cdef unsigned chunk
        PyMem_Free(self.spare)
        if self.chunks != NULL:
            for chunk in range(self.count >> self.chunk_shift):
                if self.chunks[chunk] != NULL:
                    munmap(self.chunks[chunk], self.chunk_size)
            PyMem_Free(self.chunks)
        if <void *>self.entries != MAP_FAILED:
            munmap(self.entries, self.entries_size)


@cython.final
@cython.no_gc                   # its object fields, the pool and None, refer to no view
cdef class ReceivedView(MessageView):
    """A csock.MessageView of one received message in a provided buffer. The buffer goes
    back to the kernel when the view (and every memoryview taken of it) is released; until
    then its bytes do not change. ``bytes(view)`` copies them out."""
    cdef BufferPool pool                # None for a datagram split out of a coalesced one...
    cdef object owner                   # ...which holds the whole message's view instead
    cdef uint16_t bid

    def __dealloc__(self):
        if self.pool is not None:
            self.pool.recycle(self.bid)

    @property
    def buffer_id(self):
        """Which of the ring's provided buffers holds these bytes (0 to buffers - 1)."""
        return self.bid

    def __repr__(self):
        return f"<csock.uring.ReceivedView {self.length} bytes>"


cdef ReceivedView make_view(BufferPool pool, uint16_t bid, Py_ssize_t offset, Py_ssize_t length):
    cdef ReceivedView view = ReceivedView.__new__(ReceivedView)
    view.pool = pool
    view.bid = bid
    view.ptr = pool.buffer(bid) + offset
    view.length = length
    pool.outstanding += 1
    return view


cdef ReceivedView segment_view(ReceivedView whole, Py_ssize_t offset, Py_ssize_t length):
    """A view of whole[offset:offset + length] that keeps whole, and so its buffer, alive."""
    cdef ReceivedView view = ReceivedView.__new__(ReceivedView)
    view.owner = whole
    view.bid = whole.bid
    view.ptr = whole.ptr + offset
    view.length = length
    return view


cpdef int check_datagram_socket(object sock) except -1:
    """sock's fd; TypeError unless sock is a socket, ValueError unless a datagram one
    (SOCK_DGRAM, SOCK_RAW), EBADF if it is closed (recv_many's checks, the fallback's too). A
    multishot recvmsg takes an empty message as a record: at a SEQPACKET socket's end of
    stream it would complete with one, be armed again and complete again, for ever."""
    if not isinstance(sock, _socket.socket):
        raise TypeError(f"expected a socket object, not {type(sock).__name__}")
    if _raw_type(sock) not in (SOCK_DGRAM, SOCK_RAW):
        raise ValueError("recvmsg and recv_many take SOCK_DGRAM or SOCK_RAW sockets "
                         "(recv takes stream and SEQPACKET ones)")
    fd = _socket.socket.fileno(sock)
    if fd < 0:
        raise_errno(EBADF)
    return fd


cpdef int check_datagram_sockets(tuple socks) except -1:
    """check_datagram_socket for each of recv_many's sockets, and ValueError if one is named
    twice: two requests on one socket would split its datagrams between two lists at random.
    Then the error a previous batch receive saved for one of them, if any, is raised."""
    cdef set seen = set()
    for sock in socks:
        fd = check_datagram_socket(sock)
        if fd in seen:
            raise ValueError(f"recv_many names the socket of fd {fd} twice")
        seen.add(fd)
    for sock in socks:
        take_saved_error(sock)
    return 0


# Receive errors that came with datagrams a call returned (other sockets', or this one's): each
# is raised by the next batch receive on its socket, as recvmmsg(2) saves an error that follows
# a datagram for the next call. A csock socket keeps it in its state, where recv_batch keeps
# its own (so either call raises either's); a stdlib socket's waits here for recv_many (weak:
# a socket collected takes its error along).
cdef object _saved_errors = _weakref.WeakKeyDictionary()


cdef int save_error(object sock, object error) except -1:
    cdef SocketState state = state_of(sock)
    if state is not None:
        state.recv_error = error
    else:
        _saved_errors[sock] = error
    return 0


cdef int take_saved_error(object sock) except -1:
    """Raise the receive error saved for sock, if any (taking it)."""
    cdef SocketState state = state_of(sock)
    if state is not None:
        error, state.recv_error = state.recv_error, None
    elif _saved_errors:
        error = _saved_errors.pop(sock, None)
    else:
        return 0
    if error is not None:
        raise error
    return 0


cpdef list settle_errors(list received, list failures):
    """recv_many's result from what each socket received and its (socket, error) failures:
    the datagrams, each OSError saved for its socket's next call, when any datagram came;
    otherwise the first error raised (the others saved). Not an OSError: raised at once."""
    if not failures:
        return received
    for _, error in failures:
        if not isinstance(error, OSError):
            raise error
    if any(received):
        first = None
    else:
        first = failures[0][1]
    for sock, error in failures:
        if error is not first:
            save_error(sock, error)
    if first is not None:
        raise first
    return received


# --- Requests and completions -------------------------------------------------------------

# Native memory a request lends the kernel until its last completion: the msghdr, its iovec
# and the destination address (sendmsg), or the msghdr that sizes a multishot recvmsg's name.
cdef struct Native:
    msghdr msg
    iovec iov
    sockaddr_storage address


@cython.final
@cython.no_gc_clear             # __dealloc__ gives back the hold and the export
cdef class Request:
    """One submitted operation. ``done`` once its last completion was reaped; a multishot
    request (recv, recvmsg, accept) completes many times until then."""
    cdef readonly object sock
    cdef readonly bint multishot
    cdef readonly bint done
    cdef Kind kind
    cdef uint64_t id
    cdef object ring                    # the Ring (None once done)
    cdef object hold                    # the token inflight_hold gave (the SocketState)
    cdef bint held
    cdef Py_buffer data                 # a send's buffer export, held until the last completion
    cdef bint has_data
    cdef bint drain                     # recvmsg(drain=True): EAGAIN ends it quietly
    cdef bint cancelling                # cancel asked: never re-armed
    cdef int fd_for_sqe
    cdef bint owns_fd                   # fd_for_sqe is this request's own dup (a stdlib socket)
    cdef Native *native
    cdef list sink                      # recv_many/send_many collect here, not in Ring.ready
    cdef object sink_error              # recv_many: the first error its recvmsg ended with
    cdef object framed                  # recv(framed=...): the FramedStream fed in place
    cdef Py_ssize_t fed_quietly         # its bytes fed since its last completion was reported
    cdef bint direct                    # armed into framed's arena (framed_lend), not the pool
    cdef bint records                   # recv on a socket that keeps boundaries (not a stream)
    # What run_callbacks() calls with each of this request's completions (None: wait()).
    cdef public object callback

    @property
    def op(self):
        return _KIND_NAMES[self.kind]

    def __repr__(self):
        state = "done" if self.done else "pending"
        return f"<csock.uring.Request {self.op} {state}>"

    cdef void release(self) noexcept:
        """The kernel is done with everything this request lent it."""
        if self.held:
            self.held = False
            forget_hold(self)
            inflight_release(self.hold)
        self.hold = None
        self.framed = None
        if self.has_data:
            self.has_data = False
            PyBuffer_Release(&self.data)
        if self.native != NULL:
            PyMem_Free(self.native)
            self.native = NULL
        self.close_own_fd()

    cdef void close_own_fd(self) noexcept:
        """Close the dup a stdlib socket's request named (the kernel holds its own reference
        to the file for whatever is still running)."""
        if self.owns_fd:
            self.owns_fd = False
            close_fd(self.fd_for_sqe)
            self.fd_for_sqe = -1

    def __dealloc__(self):
        self.release()


@cython.final
cdef class Completion:
    """One result of a request: ``value`` is what the operation returns (a ReceivedView for a
    receive, b"" at end of stream; a csock.Datagram for recvmsg; the byte count for a send; the
    new socket for accept), ``error`` the OSError it failed with (value None then). ``more`` is
    true while a multishot request stays armed."""
    cdef readonly Request request
    cdef readonly object value
    cdef readonly object error
    cdef readonly int result
    cdef readonly bint more
    # A recvmsg's datagram, or a recv's record, was longer than its buffer's room (the
    # kernel's MSG_TRUNC): the view holds its head only, result the whole length (recv).
    cdef readonly bint truncated

    def __repr__(self):
        shown = self.error if self.error is not None else self.value
        return f"<csock.uring.Completion {self.request.op} {shown!r} more={self.more}>"


# close() of a csock socket with requests in flight: its SocketState -> those requests.
cdef dict _by_state = {}


cdef void remember_hold(Request request):
    if request.hold is not None:
        requests = _by_state.get(request.hold)
        if requests is None:
            requests = _by_state[request.hold] = set()
        requests.add(request)


cdef void forget_hold(Request request) noexcept:
    cdef set requests
    if request.hold is None:
        return
    requests = _by_state.get(request.hold)
    if requests is not None:
        requests.discard(request)
        if not requests:
            del _by_state[request.hold]


cdef void on_close(object state) noexcept:
    """close() deferred close(2) to this socket's requests: cancel them, so that their last
    completions (which release the holds, the last one closing the fd) come at once."""
    cdef Request request
    cdef Ring ring
    try:
        requests = _by_state.get(state)
        if not requests:
            return
        rings = set()
        for request in list(requests):
            ring = request.ring
            if ring is not None and ring.usable():
                ring.cancel_request(request)
                rings.add(ring)
        for ring in rings:
            ring.submit()
            if ring.reap_in_close:
                ring.reap()             # (and wakes a thread asleep in wait() to see them)
    except BaseException:
        pass                            # close() goes on; the completions come with the next wait


set_close_hook(on_close)


# --- The ring ------------------------------------------------------------------------------

cdef int _next_ring_group = 0


@cython.final
@cython.no_gc      # not collected while requests (which refer to it) are pending: close() it
cdef class Ring:
    """An io_uring instance: Ring(entries=256, buffers=256, buffer_size=65536).

    entries is the size of the submission queue (the completion queue is twice that);
    buffers and buffer_size size the provided buffer ring receives use (buffers a power of
    two; 0 for a ring that only sends). Raises OSError when io_uring is unavailable (ENOSYS:
    no kernel support; EPERM: a seccomp filter, kernel.io_uring_disabled or CSOCK_URING=0 in
    the environment)."""
    cdef int fd
    cdef pid_t pid
    cdef void *sq_ring
    cdef void *cq_ring
    cdef size_t sq_ring_size, cq_ring_size, sqes_size
    cdef csock_uring_sqe *sqes
    cdef uint32_t *sq_head
    cdef uint32_t *sq_tail
    cdef uint32_t *sq_flags
    cdef uint32_t sq_mask, sq_entries, sq_local_tail
    cdef uint32_t *cq_head
    cdef uint32_t *cq_tail
    cdef uint32_t cq_mask
    cdef csock_uring_cqe *cqes
    cdef readonly unsigned features
    cdef unsigned char supported[256]
    cdef dict requests                  # id -> Request, until its last completion
    cdef uint64_t next_id
    cdef list ready                     # reaped completions wait() has not returned yet
    cdef int waiting                    # threads asleep in io_uring_enter for completions
    cdef readonly BufferPool pool
    cdef readonly uint32_t recv_limit   # RECV_LIMIT, or 0 where the kernel takes no limit
    cdef bint cancel_again              # SQEs written while reaping (reap submits them)
    cdef readonly Py_ssize_t cancels_repeated
    # A socket's close() reaps this ring's completions at once (so that a thread asleep in
    # wait() sees them). A ring an event loop drives (csock.aio's engine) sets it False: its
    # completions must stay in the CQ, where they make the ring's fd readable for the loop.
    cdef public bint reap_in_close
    cdef frozenset ops                  # supported_ops(), probed once
    cdef bint initialised               # __init__ ran (once: a closed Ring stays closed)
    # The sender address recvmsg reported last, and its Python object: datagrams from one
    # sender (the usual run) share it instead of building a tuple and a str each.
    cdef sockaddr_storage last_name     # (aligned for the sockaddr fields: NAME_ROOM bytes)
    cdef uint32_t last_namelen
    cdef object last_address

    def __cinit__(self):
        self.fd = -1
        self.sq_ring = MAP_FAILED
        self.cq_ring = MAP_FAILED
        self.sqes = <csock_uring_sqe *>MAP_FAILED
        self.requests = {}
        self.ready = []
        self.next_id = 1
        self.reap_in_close = True
        self.recv_limit = RECV_LIMIT

    def __init__(self, entries=256, buffers=256, buffer_size=65536):
        entries, buffers, buffer_size = _index(entries), _index(buffers), _index(buffer_size)
        if entries < 1 or entries > 32768:
            raise ValueError(f"entries must be between 1 and 32768, got {entries}")
        if buffers < 0 or buffers & (buffers - 1) or buffers > 32768:
            raise ValueError(f"buffers must be a power of two up to 32768 (or 0), got {buffers}")
        if buffers and (buffer_size < 1 or buffer_size > (1 << 30)):
            raise ValueError(f"buffer_size must be between 1 and 2**30, got {buffer_size}")
        if self.initialised:
            # (again on a closed Ring it reopened it with the old ops and pool)
            raise ValueError("Ring.__init__ ran already: make a new Ring")
        self.initialised = True
        self.setup(entries)
        self.probe_ops()
        if buffers:
            self.register_pool(buffers, buffer_size)

    cdef int setup(self, unsigned entries) except -1:
        cdef csock_uring_params params
        memset(&params, 0, sizeof(params))
        if _os.environ.get("CSOCK_URING") == "0":
            # The operator's switch (as libuv's UV_USE_IO_URING=0): refused as a seccomp
            # filter refuses it, so that every caller takes the path it takes there.
            raise OSError(EPERM, "io_uring turned off by CSOCK_URING=0 (io_uring unavailable)")
        # COOP_TASKRUN (5.19): the kernel finishes a request's work at this task's next
        # system call instead of interrupting it (an IPI) while it runs Python; TASKRUN_FLAG
        # says when such work waits, so that reap() can enter for it.
        params.flags = (CSOCK_IORING_SETUP_CLAMP | CSOCK_IORING_SETUP_SUBMIT_ALL
                        | CSOCK_IORING_SETUP_COOP_TASKRUN | CSOCK_IORING_SETUP_TASKRUN_FLAG)
        fd = csock_io_uring_setup(entries, &params)
        if fd < 0 and errno == EINVAL:              # before 5.19: no COOP_TASKRUN
            memset(&params, 0, sizeof(params))
            params.flags = CSOCK_IORING_SETUP_CLAMP | CSOCK_IORING_SETUP_SUBMIT_ALL
            fd = csock_io_uring_setup(entries, &params)
        if fd < 0 and errno == EINVAL:              # before 5.18: no SUBMIT_ALL
            memset(&params, 0, sizeof(params))
            params.flags = CSOCK_IORING_SETUP_CLAMP
            fd = csock_io_uring_setup(entries, &params)
        if fd < 0:
            raise OSError(errno, f"io_uring_setup: {_os.strerror(errno)} (io_uring unavailable)")
        self.fd = fd
        self.pid = _current_pid
        self.features = params.features
        if not params.features & CSOCK_IORING_FEAT_SINGLE_MMAP:
            raise OSError(ENOSYS, "io_uring: this kernel predates IORING_FEAT_SINGLE_MMAP (5.4)")
        self.sq_ring_size = params.sq_off.array + params.sq_entries * sizeof(uint32_t)
        self.cq_ring_size = params.cq_off.cqes + params.cq_entries * sizeof(csock_uring_cqe)
        if self.cq_ring_size > self.sq_ring_size:
            self.sq_ring_size = self.cq_ring_size
        self.sq_ring = mmap(NULL, self.sq_ring_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                            fd, CSOCK_IORING_OFF_SQ_RING)
        if self.sq_ring == MAP_FAILED:
            raise_errno(errno)
        self.cq_ring = self.sq_ring             # one mapping for both (SINGLE_MMAP)
        self.sqes_size = params.sq_entries * sizeof(csock_uring_sqe)
        self.sqes = <csock_uring_sqe *>mmap(NULL, self.sqes_size, PROT_READ | PROT_WRITE,
                                            MAP_SHARED, fd, CSOCK_IORING_OFF_SQES)
        if <void *>self.sqes == MAP_FAILED:
            raise_errno(errno)
        cdef char *sq = <char *>self.sq_ring
        self.sq_head = <uint32_t *>(sq + params.sq_off.head)
        self.sq_tail = <uint32_t *>(sq + params.sq_off.tail)
        self.sq_flags = <uint32_t *>(sq + params.sq_off.flags)
        self.sq_mask = (<uint32_t *>(sq + params.sq_off.ring_mask))[0]
        self.sq_entries = params.sq_entries
        self.sq_local_tail = self.sq_tail[0]
        cdef uint32_t *array = <uint32_t *>(sq + params.sq_off.array)
        for i in range(params.sq_entries):
            array[i] = i                        # SQ slot i is always SQE i
        self.cq_head = <uint32_t *>(sq + params.cq_off.head)
        self.cq_tail = <uint32_t *>(sq + params.cq_off.tail)
        self.cq_mask = (<uint32_t *>(sq + params.cq_off.ring_mask))[0]
        self.cqes = <csock_uring_cqe *>(sq + params.cq_off.cqes)
        return 0

    cdef int probe_ops(self) except -1:
        """IORING_REGISTER_PROBE: which opcodes this kernel has (5.6+; before, only the
        oldest are assumed)."""
        cdef csock_uring_probe *probe = <csock_uring_probe *>PyMem_Calloc(
            1, sizeof(csock_uring_probe))
        if probe == NULL:
            raise MemoryError()
        try:
            memset(self.supported, 0, sizeof(self.supported))
            if csock_io_uring_register(self.fd, CSOCK_IORING_REGISTER_PROBE, probe, 256) < 0:
                return 0
            for i in range(probe.ops_len):
                if probe.ops[i].flags & CSOCK_IO_URING_OP_SUPPORTED:
                    self.supported[probe.ops[i].op] = 1
        finally:
            PyMem_Free(probe)
        return 0

    cdef int register_pool(self, unsigned count, Py_ssize_t buffer_size) except -1:
        cdef csock_uring_buf_reg reg
        cdef BufferPool pool = BufferPool.__new__(BufferPool)
        pool.allocate(count, buffer_size)
        memset(&reg, 0, sizeof(reg))
        reg.ring_addr = <uint64_t><size_t>pool.entries
        reg.ring_entries = count
        reg.bgid = BUFFER_GROUP
        if csock_io_uring_register(self.fd, CSOCK_IORING_REGISTER_PBUF_RING, &reg, 1) < 0:
            return 0        # before 5.19: no provided buffer rings, so no receives (has("recv"))
        pool.registered = True
        self.pool = pool
        return 0

    # -- state --

    cdef inline bint usable(self) noexcept:
        return self.fd >= 0 and self.pid == _current_pid

    cdef int check_usable(self) except -1:
        if self.fd < 0:
            raise ValueError("the Ring is closed")
        if self.pid != _current_pid:
            raise OSError(EINVAL, "this Ring belongs to the parent process: after fork() the "
                                  "child makes its own (csock.uring.default_ring() does)")
        return 0

    def supports(self, name):
        """Whether this kernel and ring can run an operation: "recv", "recvmsg", "send",
        "sendmsg", "send_zc", "accept", "poll" (multishot receives and accept need 6.0, known by
        the presence of IORING_OP_SEND_ZC, and a registered buffer ring)."""
        return name in self.supported_ops()

    def supported_ops(self):
        """The operations supports() reports true for, as a frozenset."""
        if self.ops is None:
            self.ops = self.probed_ops()
        return self.ops

    cdef frozenset probed_ops(self):
        ops = set()
        multishot = self.supported[CSOCK_IORING_OP_SEND_ZC]   # 6.0: multishot recv/recvmsg
        if self.supported[CSOCK_IORING_OP_SEND]:
            ops.add("send")
        if self.supported[CSOCK_IORING_OP_SENDMSG]:
            ops.add("sendmsg")
        if self.supported[CSOCK_IORING_OP_SEND_ZC]:
            ops.add("send_zc")
        if self.supported[CSOCK_IORING_OP_POLL_ADD]:
            ops.add("poll")
        if self.supported[CSOCK_IORING_OP_ACCEPT] and self.supported[CSOCK_IORING_OP_SOCKET]:
            ops.add("accept")                   # multishot accept: 5.19, as OP_SOCKET
        if self.pool is not None and multishot:
            ops.add("recv")
            ops.add("recvmsg")
        return frozenset(ops)

    @property
    def fileno(self):
        """The ring's file descriptor (readable, for poll/epoll, when completions wait)."""
        return self.fd

    @property
    def closed(self):
        return self.fd < 0

    @property
    def pending(self):
        """Requests submitted whose last completion has not been reaped."""
        return len(self.requests)

    def pending_requests(self):
        """The Requests counted by pending, oldest first."""
        return list(self.requests.values())

    # -- submission --

    cdef csock_uring_sqe *get_sqe(self) except NULL:
        """The next free SQE, zeroed; submits what is queued first when the SQ is full."""
        cdef csock_uring_sqe *sqe
        while True:
            self.check_usable()         # (again after submit: its reap may have run close())
            if self.sq_local_tail - csock_load_acquire(self.sq_head) < self.sq_entries:
                break
            self.submit()
        sqe = &self.sqes[self.sq_local_tail & self.sq_mask]
        memset(sqe, 0, sizeof(csock_uring_sqe))
        self.sq_local_tail += 1         # published by submit(): fill it before any Python runs
        return sqe

    cdef csock_uring_sqe *sqe_for(self, Request request, uint8_t opcode) except NULL:
        """request's SQE, its opcode, fd and user_data set (the request is dropped if the
        SQ cannot take it). The caller fills the rest without running Python code."""
        cdef csock_uring_sqe *sqe
        try:
            sqe = self.get_sqe()
        except BaseException:
            self.abandon(request)
            raise
        sqe.opcode = opcode
        sqe.fd = request.fd_for_sqe
        sqe.user_data = request.id
        return sqe

    cdef int enter(self, unsigned to_submit, unsigned min_complete, unsigned flags,
                   void *arg, size_t argsz, bint release_gil) except -2:
        """io_uring_enter, retried on EINTR after signal handlers ran (Ctrl-C raises);
        returns -1 with errno set for ETIME, EAGAIN and EBUSY (the callers' business)."""
        cdef int n
        while True:
            if release_gil:
                with nogil:
                    n = csock_io_uring_enter(self.fd, to_submit, min_complete, flags, arg, argsz)
            else:
                n = csock_io_uring_enter(self.fd, to_submit, min_complete, flags, arg, argsz)
            if n >= 0:
                return n
            if errno == EINTR:
                PyErr_CheckSignals()
                if min_complete:
                    return 0            # let the caller look at the CQ (and its deadline) again
                continue
            if errno in (ETIME, EAGAIN, EBUSY):
                return -1
            raise_errno(errno)

    cpdef int submit(self) except -1:
        """Hand every queued request to the kernel (one io_uring_enter); returns how many.
        Network requests are tried at once and, if they would wait, armed on the socket."""
        cdef uint32_t queued
        cdef int n
        self.check_usable()
        csock_store_release(self.sq_tail, self.sq_local_tail)
        queued = self.sq_local_tail - csock_load_acquire(self.sq_head)
        if queued == 0:
            return 0
        n = self.enter(queued, 0, 0, NULL, 0, False)
        if n < 0:                       # CQ overflowing: make room, then the caller retries
            self.reap()
            return 0
        return n

    cdef Request new_request(self, Kind kind, object sock, bint multishot):
        """A request on sock, holding its in-flight reference (EBADF if closed), or, on a
        stdlib socket, its own dup of the fd."""
        cdef int fd = -1
        cdef Request request = Request.__new__(Request)
        self.check_usable()
        request.kind = kind
        request.sock = sock
        request.multishot = multishot
        hold = inflight_hold(sock, &fd)
        if hold is None:
            request.fd_for_sqe = fd = pin_file(fd)
            request.owns_fd = True
        request.hold = hold
        request.held = True
        remember_hold(request)
        request.id = self.next_id
        self.next_id += 1
        request.ring = self
        self.requests[request.id] = request
        request.fd_for_sqe = fd
        return request

    cdef int native(self, Request request) except -1:
        request.native = <Native *>PyMem_Calloc(1, sizeof(Native))
        if request.native == NULL:
            raise MemoryError()
        return 0

    cdef void abandon(self, Request request) noexcept:
        """A request whose SQE was never written (its arguments were bad)."""
        self.requests.pop(request.id, None)
        request.ring = None
        request.done = True
        request.release()

    cdef int need(self, str name) except -1:
        if self.ops is None:
            self.supported_ops()
        if name not in self.ops:
            raise OSError(ENOSYS, f"io_uring: this kernel or ring has no {name} "
                                  "(see Ring.supported_ops())")
        return 0

    def recv(self, sock, *, bint multishot=True, framed=None):
        """Receive on a stream (or connected) socket into provided buffers: each completion's
        value is a ReceivedView of what one receive got, b"" at end of stream. Multishot
        (the default) stays armed, one completion per arrival, until end of stream, an
        error, cancel() or close(); -ENOBUFS ends it when every buffer is held in views. On a
        socket that keeps boundaries (UDP, SEQPACKET) each completion is one record, and one
        longer than a ring buffer holds its head with ``truncated`` true (MSG_TRUNC; ``result``
        is the whole length); on a UDP socket with UDP_GRO, as recv(2) there, one may hold
        several datagrams the kernel coalesced: recvmsg() splits them.

        With ``framed`` (a csock._fastio.FramedStream; on a SOCK_STREAM socket only, else
        ValueError), each receive's bytes are fed to it during the reap, the buffer goes
        straight back, and the value is the list of whole messages it now holds (the error
        feed() raised, FrameTooLargeError, in ``error``). A receive that completes no message
        makes no completion: its bytes count in the ``result`` of the next one. The rest of
        a frame larger than a ring buffer is received straight into the stream's arena (one
        plain recv, armed where the multishot one ended); meanwhile the stream's own receives
        and feed() of bytes raise RuntimeError."""
        self.need("recv")
        if framed is not None and not isinstance(framed, _FramedStream):
            raise TypeError("framed must be a csock._fastio.FramedStream, "
                            f"not {type(framed).__name__}")
        cdef Request request = self.new_request(RECV, sock, multishot)
        request.records = _raw_type(sock) != SOCK_STREAM
        if request.records and framed is not None:
            self.abandon(request)
            raise ValueError("framed receives need a SOCK_STREAM socket: a record socket's "
                             "records may be longer than a ring buffer")
        request.framed = framed
        self.arm(request)
        return request

    cdef int arm(self, Request request) except -1:
        """Write the SQE of a receive or accept request (again, to re-arm a multishot one
        the kernel ended early)."""
        cdef csock_uring_sqe *sqe
        if request.kind == RECV:
            if request.framed is not None and self.arm_into_frame(request):
                return 0
            sqe = self.sqe_for(request, CSOCK_IORING_OP_RECV)
            sqe.flags = CSOCK_IOSQE_BUFFER_SELECT
            sqe.buf_group = BUFFER_GROUP
            if request.records:
                # recv(2)'s MSG_TRUNC: a datagram's or record's whole length, so that one a
                # buffer cut is reported as cut (on a stream it would discard the bytes).
                sqe.op_flags = MSG_TRUNC
            if request.multishot:
                sqe.ioprio = CSOCK_IORING_RECV_MULTISHOT
                sqe.optlen = self.recv_limit
        elif request.kind == RECVMSG:
            sqe = self.sqe_for(request, CSOCK_IORING_OP_RECVMSG)
            sqe.addr = <uint64_t><size_t>&request.native.msg
            sqe.len = 1
            sqe.flags = CSOCK_IOSQE_BUFFER_SELECT
            sqe.buf_group = BUFFER_GROUP
            sqe.ioprio = CSOCK_IORING_RECV_MULTISHOT
            # (not MSG_CMSG_CLOEXEC for the fds an AF_UNIX peer passes, which the reap closes:
            # AF_PACKET's recvmsg refuses flags it does not know, EINVAL)
            sqe.op_flags = MSG_DONTWAIT if request.drain else 0
        elif request.kind == ACCEPT:
            sqe = self.sqe_for(request, CSOCK_IORING_OP_ACCEPT)
            sqe.ioprio = CSOCK_IORING_ACCEPT_MULTISHOT
            sqe.op_flags = SOCK_CLOEXEC
        return 0

    cdef bint arm_into_frame(self, Request request) except -1:
        """Arm a framed recv as one plain recv into the stream's arena when the frame it is in
        misses more than a ring buffer holds: the kernel copies those bytes once, not into
        ring buffers that the reap copies again (twice epoll's CPU for 1 MiB frames). One
        request at a time, as the multishot one, so the bytes stay in order."""
        cdef char *at = NULL
        cdef object framed = request.framed
        cdef Py_ssize_t lent
        cdef csock_uring_sqe *sqe
        if self.pool is None:
            return False
        # Before the SQE is taken: making room in the arena may allocate, so run Python code.
        lent = framed_lend(framed, self.pool.buffer_size + 1, &at)
        if lent == 0:
            return False
        try:
            sqe = self.sqe_for(request, CSOCK_IORING_OP_RECV)
        except BaseException:
            framed_lent_filled(framed, 0)
            raise
        sqe.addr = <uint64_t><size_t>at
        sqe.len = <uint32_t>(lent if lent < (1 << 30) else (1 << 30))
        request.direct = True
        return True

    def recvmsg(self, sock, *, bint drain=False):
        """Multishot receive of datagrams with their senders' addresses: each completion's
        value is a csock.Datagram (a ReceivedView, the sender, ``truncated`` when the ring's
        buffer cut the datagram, and the metadata enable_metadata asks for), or, on a socket
        with UDP_GRO, a list of them when the kernel coalesced several into one message.
        drain=True ends the request once the socket's queue is empty (MSG_DONTWAIT: its last
        completion is EAGAIN, reported as no error and value None) instead of staying armed
        for later datagrams."""
        self.check_recvmsg_ring()
        check_datagram_socket(sock)
        return self.arm_recvmsg(sock, drain)

    cdef int check_recvmsg_ring(self) except -1:
        """ENOSYS without the operation, ValueError if a buffer has no room for payload."""
        self.need("recvmsg")
        if self.pool.buffer_size <= PAYLOAD_AT:
            raise ValueError(f"recvmsg needs ring buffers of more than {PAYLOAD_AT} bytes "
                             f"(RECVMSG_HEADROOM), not {self.pool.buffer_size}")
        return 0

    cdef Request arm_recvmsg(self, object sock, bint drain):
        """recvmsg's request, its ring and socket checked already."""
        cdef Request request = self.new_request(RECVMSG, sock, True)
        try:
            self.native(request)
        except BaseException:
            self.abandon(request)
            raise
        request.native.msg.msg_namelen = NAME_ROOM
        # (the kernel lays the control messages out in the ring buffer, not at msg_control)
        request.native.msg.msg_controllen = CONTROL_ROOM
        request.drain = drain
        self.arm(request)
        return request

    def poll(self, sock, int events=POLLIN):
        """Wait until sock is ready for events (POLLIN by default; a poll(2) mask) without a
        system call of its own: one completion, whose value is the ready mask (POLLERR and
        POLLHUP included whether asked for or not), once the socket is ready (at once if it
        is already). One-shot: csock.aio's datagram engine arms it again after each read."""
        self.need("poll")
        if events <= 0 or events > 0xFFFF:
            raise ValueError(f"events must be a poll(2) mask between 1 and 0xFFFF, got {events}")
        cdef Request request = self.new_request(POLL, sock, False)
        cdef csock_uring_sqe *sqe = self.sqe_for(request, CSOCK_IORING_OP_POLL_ADD)
        sqe.op_flags = <uint32_t>events     # poll32_events (the op_flags union)
        return request

    cdef Request send_request(self, Kind kind, object sock, object data, object address):
        cdef Request request = self.prepare_send(kind, sock, data, address)
        self.write_send(request)
        return request

    cdef Request prepare_send(self, Kind kind, object sock, object data, object address):
        """A send request with its buffer exported and its address converted, its SQE not
        written yet (write_send): bad arguments raise here, before anything is queued."""
        cdef Request request = self.new_request(kind, sock, False)
        try:
            PyObject_GetBuffer(data, &request.data, PyBUF_SIMPLE)
            request.has_data = True
            if address is not None:
                self.native(request)
                request.native.msg.msg_namelen = address_to_sockaddr_on(
                    address, _raw_family(sock), &request.native.address, request.fd_for_sqe)
        except BaseException:
            self.abandon(request)
            raise
        return request

    cdef int write_send(self, Request request) except -1:
        cdef Kind kind = request.kind
        cdef socklen_t length = request.native.msg.msg_namelen if request.native != NULL else 0
        cdef uint8_t opcode = CSOCK_IORING_OP_SEND
        cdef uint32_t flags = MSG_NOSIGNAL
        if kind == SENDMSG:
            opcode = CSOCK_IORING_OP_SENDMSG
        elif kind == SEND_ZC:
            opcode = CSOCK_IORING_OP_SEND_ZC
        cdef int kind_of_socket = _raw_type(request.sock)
        if kind_of_socket in (SOCK_STREAM, SOCK_SEQPACKET):
            flags |= MSG_WAITALL                # the whole buffer, as sendall (zero-copy too)
        elif kind_of_socket in (SOCK_DGRAM, SOCK_RAW):
            # Never let io_uring retry a datagram send: issued non-blocking first, a send that
            # meets EAGAIN is retried after a poll with its iov where the failed attempt left
            # it, and unix_dgram_sendmsg copies the payload into its skb before it finds the
            # peer's queue full (ip_append_data too, for each fragment in turn), so the retry
            # sent an empty (or cut) datagram. MSG_DONTWAIT sets REQ_F_NOWAIT: the request
            # completes with -EAGAIN instead, and nothing was sent.
            flags |= MSG_DONTWAIT
        cdef csock_uring_sqe *sqe = self.sqe_for(request, opcode)
        sqe.op_flags = flags
        if kind == SENDMSG:
            request.native.iov.iov_base = request.data.buf
            request.native.iov.iov_len = request.data.len
            request.native.msg.msg_iov = &request.native.iov
            request.native.msg.msg_iovlen = 1
            request.native.msg.msg_name = &request.native.address
            request.native.msg.msg_namelen = length
            sqe.addr = <uint64_t><size_t>&request.native.msg
            sqe.len = 1
        else:
            sqe.addr = <uint64_t><size_t>request.data.buf
            sqe.len = <uint32_t>min(request.data.len, <Py_ssize_t>SEND_MAX)
            if length:
                sqe.off = <uint64_t><size_t>&request.native.address
                sqe.addr_len = <uint16_t>length
        return 0

    def send(self, sock, data):
        """Send data (any bytes-like object; its export is held until the completion, whose
        value is the byte count). On a stream socket the whole buffer is sent (MSG_WAITALL),
        up to 2 GiB - 4 KiB (the most one send(2) moves; the count says where to resume). On a
        datagram socket (SOCK_DGRAM, SOCK_RAW) with no room it completes at once with
        BlockingIOError and sends nothing (MSG_DONTWAIT: io_uring's retry of a datagram send
        could send it empty); wait for POLLOUT and send again."""
        self.need("send")
        return self.send_request(SEND, sock, data, None)

    def sendmsg(self, sock, data, address=None):
        """sendmsg(2) of data to address (None: the connected peer). As send(): on a datagram
        socket with no room, BlockingIOError at once and nothing sent."""
        self.need("sendmsg")
        return self.send_request(SENDMSG if address is not None else SEND, sock, data, address)

    def send_zc(self, sock, data, address=None):
        """Zero-copy send (IORING_OP_SEND_ZC): the kernel sends from data's own pages, so the
        buffer export is held until the kernel's notification completion, not only the first
        completion (whose value is the byte count). On a stream socket the whole buffer is
        sent, as send() sends it (MSG_WAITALL); on a datagram socket with no room it completes
        with BlockingIOError at once, as send()."""
        self.need("send_zc")
        return self.send_request(SEND_ZC, sock, data, address)

    def accept(self, sock):
        """Multishot accept on a listening socket: each completion's value is a new socket
        of the listener's class (close-on-exec), until cancel() or close()."""
        self.need("accept")
        cdef Request request = self.new_request(ACCEPT, sock, True)
        self.arm(request)
        return request

    cdef int cancel_request(self, Request request) except -1:
        request.cancelling = True       # (no re-arm after this)
        return self.queue_cancel(request.id)

    cdef int queue_cancel(self, uint64_t id) except -1:
        cdef csock_uring_sqe *sqe = self.get_sqe()
        sqe.opcode = CSOCK_IORING_OP_ASYNC_CANCEL
        sqe.fd = -1
        sqe.addr = id
        sqe.user_data = CANCEL_BIT | id
        return 0

    def cancel(self, Request request not None):
        """Ask the kernel to cancel request (submitted at once); its last completion, with
        ECANCELED unless it finished first, comes with a later wait(). False if it was done."""
        self.check_usable()
        if request.done or request.ring is not self:
            return False
        self.cancel_request(request)
        self.submit()
        return True

    def cancel_socket(self, sock):
        """Cancel every pending request on sock; returns how many were asked."""
        self.check_usable()
        count = 0
        for request in list(self.requests.values()):
            if (<Request>request).sock is sock:
                self.cancel_request(<Request>request)
                count += 1
        if count:
            self.submit()
        return count

    # -- completion --

    cpdef int reap(self) except -1:
        """Move every completion the kernel posted into the ready list (or a batch's own
        list); returns how many belonged to requests."""
        cdef int count = 0
        self.begin_reap()
        while self.reap_next(&count, NULL):
            pass
        self.end_reap(count)
        return count

    cdef inline void begin_reap(self) noexcept:
        if self.pool is not None:
            self.pool.grew = False

    cdef int reap_next(self, int *count, uint32_t *stop) except -1:
        """Dispatch the next completion the kernel posted (adding 1 to count if it belonged
        to a request); 0 once there is none, or, given a stop, once the CQ head reaches it
        and no completion waits in the kernel."""
        cdef uint32_t head, tail
        cdef csock_uring_cqe cqe
        while self.fd >= 0:             # (close() may run in the Python code dispatch runs)
            head = self.cq_head[0]
            tail = csock_load_acquire(self.cq_tail)
            if head == tail or (stop != NULL and head == stop[0]):
                if not csock_load_acquire(self.sq_flags) & (SQ_CQ_OVERFLOW | SQ_TASKRUN):
                    return 0
                # Completions that found the CQ full wait in the kernel (FEAT_NODROP), in
                # order, and with COOP_TASKRUN finished requests wait for this task to run
                # their work: an enter for events posts them (without waiting: min_complete 0).
                self.enter(0, 0, CSOCK_IORING_ENTER_GETEVENTS, NULL, 0, False)
                if csock_load_acquire(self.cq_tail) == tail:
                    return 0
                if stop != NULL:        # what the enter posted is taken too, as reap does
                    stop[0] = csock_load_acquire(self.cq_tail)
                continue
            cqe = self.cqes[head & self.cq_mask]
            csock_store_release(self.cq_head, head + 1)    # ours now, before any Python runs
            count[0] += self.dispatch(cqe.user_data, cqe.res, cqe.flags)
            return 1
        return 0

    cdef int end_reap(self, int count) except -1:
        """Submit the re-arms and repeated cancels dispatch queued; wake another thread's
        waiter if this thread took completions it may be asleep for."""
        if self.cancel_again and self.fd >= 0:
            self.cancel_again = False
            self.submit()
        if count and self.waiting and self.fd >= 0:
            self.wake_waiters()
        return 0

    cdef int wake_waiters(self) except -1:
        """This thread took completions another thread may be asleep for: a NOP's completion
        (which nobody reports) wakes it to look at the ready list."""
        cdef csock_uring_sqe *sqe = self.get_sqe()
        sqe.opcode = CSOCK_IORING_OP_NOP
        sqe.user_data = CANCEL_USER_DATA
        self.submit()
        return 0

    cdef int dispatch(self, uint64_t user_data, int res, uint32_t flags) except -1:
        """One completion to its request; returns 0 for none (a cancel's or a NOP's own)."""
        cdef Request request
        cdef bint more = flags & CSOCK_IORING_CQE_F_MORE
        cdef Completion completion
        if user_data & CANCEL_BIT:
            if res == -EALREADY or res == -ENOENT:
                request = self.requests.get(user_data & ~CANCEL_BIT)
                if request is not None:
                    self.queue_cancel(request.id)
                    self.cancel_again = True
                    self.cancels_repeated += 1
            return 0
        if self.pool is not None:
            if flags & CSOCK_IORING_CQE_F_BUFFER:
                self.pool.filled()
            elif res == -ENOBUFS:
                self.pool.ran_out()
        request = self.requests.get(user_data) if user_data else None
        if request is None:
            if flags & CSOCK_IORING_CQE_F_BUFFER and self.pool is not None:
                self.pool.give_back(<uint16_t>(flags >> CSOCK_IORING_CQE_BUFFER_SHIFT))
            return 0
        if (res == -EINVAL and request.kind == RECV and not request.direct
                and self.refused_limit(request)):
            return 1
        if flags & CSOCK_IORING_CQE_F_NOTIF:
            if not more:
                self.finish(request)    # a zero-copy send's pages are free: nothing to report
            return 1
        if request.sink is not None and request.kind == RECVMSG:
            self.sink_datagram(request, res, flags)     # recv_many: no Completion per datagram
            if not more and self.ended_early(request, res):
                more = self.rearm(request)
            if not more:
                self.finish(request)
            return 1
        completion = Completion.__new__(Completion)
        completion.request = request
        completion.result = res
        completion.more = more
        try:
            self.fill(completion, request, res, flags)
        except BaseException as error:
            completion.error = error
        if not more and self.ended_early(request, res):
            completion.more = more = self.rearm(request)
        if request.framed is not None and self.fed_quietly(request, completion):
            return 1
        if request.sink is not None:
            request.sink.append(completion)
        else:
            self.ready.append(completion)
        if not more:
            # After the append: finishing may close the socket's fd without the GIL, and a
            # waiter that runs then must find the completion, not an empty ring.
            self.finish(request)
        return 1

    cdef inline bint fed_quietly(self, Request request, Completion completion) noexcept:
        """A framed receive that completed no message is not reported (a 64 KiB frame is two
        ring buffers: a handler call for each cost the bulk receiver); its bytes are added to
        the result of the next completion reported."""
        if (completion.more and completion.error is None and type(completion.value) is list
                and not completion.value and request.fed_quietly < (1 << 30)):   # (result: int)
            request.fed_quietly += completion.result
            return True
        completion.result += request.fed_quietly
        request.fed_quietly = 0
        return False

    cdef inline bint ended_early(self, Request request, int res) noexcept:
        """A multishot request the kernel ended although it succeeded (it does when the CQ
        overflows, or a multishot recvmsg's drain is not done): csock re-arms it, so that it
        ends only as documented (end of stream, an error, cancel, close)."""
        if request.cancelling or not request.multishot:
            return False
        return res >= 0 if request.kind == ACCEPT else res > 0

    cdef bint refused_limit(self, Request request) noexcept:
        """A multishot recv failed with EINVAL, as on kernels that take no RECV_LIMIT: arm
        it again without one (and every later one); False if that was not the cause."""
        if not (request.multishot and self.recv_limit) or request.cancelling:
            return False
        self.recv_limit = 0
        return self.rearm(request)

    cdef bint rearm(self, Request request) noexcept:
        """Write the request's SQE again (submitted at the end of this reap); False if the
        ring cannot take it (the request then ends here)."""
        if not self.usable():
            return False
        try:
            self.arm(request)
        except BaseException:
            return False                        # (sqe_for let it go: it ends here)
        self.cancel_again = True
        return True

    cdef void finish(self, Request request) noexcept:
        """The request's last completion: it gives back what it held."""
        self.requests.pop(request.id, None)
        request.done = True
        request.ring = None
        request.release()

    cdef object sender(self, const char *buffer, uint32_t namelen, int fd):
        """The address a multishot recvmsg on fd wrote in buffer, the last one's object if
        equal (an AF_PACKET sender's never: its interface is named as it is now, in fd's
        network namespace)."""
        cdef uint32_t length = namelen if namelen <= NAME_ROOM else NAME_ROOM
        cdef const char *name = buffer + NAME_AT
        if (self.last_address is not None and length == self.last_namelen
                and memcmp(name, &self.last_name, length) == 0):
            return self.last_address
        self.last_address = None                    # (until the new one is made)
        memcpy(&self.last_name, name, length)       # (aligned there, for the sockaddr's fields)
        address = address_from_sockaddr_on(&self.last_name, length, fd)
        if length >= 2 and (<const sockaddr *>&self.last_name).sa_family != AF_PACKET:
            self.last_namelen = length
            self.last_address = address
        return address

    cdef int datagrams_at(self, uint16_t bid, int res, list into, int fd) except -1:
        """Append the csock.Datagrams a multishot recvmsg put in buffer bid (res >= 0): one,
        or a coalesced message's (UDP_GRO) split back, each a view of its payload, with the
        sender, the metadata the control messages carry, and whether the buffer cut it."""
        cdef const char *buffer = self.pool.buffer(bid)
        cdef csock_uring_recvmsg_out out            # (copied: a buffer_size that is not a
        memcpy(&out, buffer, sizeof(out))           # multiple of 4 leaves it unaligned)
        cdef size_t control_length = min(out.controllen, <uint32_t>CONTROL_ROOM)
        cdef Py_ssize_t available = res - PAYLOAD_AT
        cdef Py_ssize_t full = out.payloadlen       # (MSG_TRUNC: the kernel's whole length)
        cdef Py_ssize_t off = 0, n, size
        cdef uint64_t control[CONTROL_ROOM >> 3]    # (aligned for the cmsghdrs: copied here)
        cdef ControlInfo info
        if available > full:
            available = full
        if available < 0:
            available = 0
        if out.flags & MSG_TRUNC and full <= available:
            full = available + 1                    # cut, by how much unknown
        memcpy(control, buffer + CONTROL_AT, control_length)
        read_control(control, control_length, &info)
        address = self.sender(buffer, out.namelen, fd)
        whole = make_view(self.pool, bid, PAYLOAD_AT, available)
        if info.gso <= 0 or info.gso >= available:
            size = info.gso if 0 < info.gso < full else full
            into.append(datagram_of(whole, address, available < size, &info))
            return 0
        # A coalesced message: each datagram is gso bytes (the last may be shorter). A buffer
        # that cut the message holds the head of one, flagged, and loses those after it.
        while off < available:
            n = min(<Py_ssize_t>info.gso, available - off)
            size = min(<Py_ssize_t>info.gso, full - off)
            into.append(datagram_of(segment_view(whole, off, n), address, n < size, &info))
            off += n
        return 0

    cdef void sink_datagram(self, Request request, int res, uint32_t flags) noexcept:
        """A recv_many completion: its Datagram appended to the request's sink, or its
        error kept (not an empty queue's EAGAIN, nor ENOBUFS: the rest waits in the socket)."""
        cdef uint16_t bid
        try:
            if flags & CSOCK_IORING_CQE_F_BUFFER:
                bid = <uint16_t>(flags >> CSOCK_IORING_CQE_BUFFER_SHIFT)
                if res >= 0:
                    self.datagrams_at(bid, res, request.sink, request.fd_for_sqe)
                    return
                self.pool.give_back(bid)
            if res < 0 and res != -EAGAIN and res != -ENOBUFS and request.sink_error is None:
                request.sink_error = os_error(-res)
        except BaseException as error:
            if request.sink_error is None:
                request.sink_error = error

    cdef int fill(self, Completion completion, Request request, int res, uint32_t flags) except -1:
        cdef uint16_t bid
        cdef Py_ssize_t length
        if request.direct:
            request.direct = False          # the kernel is done with the arena's room
            messages = framed_lent_filled(request.framed, res if res > 0 else 0)
            if res > 0:
                completion.value = messages
            elif res == 0:
                completion.value = b""
            else:
                completion.error = os_error(-res)
            return 0
        if flags & CSOCK_IORING_CQE_F_BUFFER:
            bid = <uint16_t>(flags >> CSOCK_IORING_CQE_BUFFER_SHIFT)
            if request.framed is not None:
                try:
                    if res > 0:
                        completion.value = framed_feed(request.framed, self.pool.buffer(bid), res)
                    elif res == 0:
                        completion.value = b""
                    else:
                        completion.error = os_error(-res)
                finally:
                    self.pool.give_back(bid)
                return 0
            if request.kind == RECVMSG and res >= 0:
                datagrams = []
                self.datagrams_at(bid, res, datagrams, request.fd_for_sqe)
                completion.value = datagrams[0] if len(datagrams) == 1 else datagrams
                completion.truncated = any([d.truncated for d in datagrams])
                return 0
            length = res if res > 0 else 0
            if length > self.pool.buffer_size:      # (records: MSG_TRUNC's whole length)
                length = self.pool.buffer_size
                completion.truncated = True
            view = make_view(self.pool, bid, 0, length)
            if res >= 0:
                completion.value = view
                return 0
        if res < 0:
            if request.drain and -res == EAGAIN:
                return 0                # drain=True: the queue is empty (value None)
            completion.error = os_error(-res)
            return 0
        if request.kind == RECV:
            completion.value = b""      # end of stream
        elif request.kind == ACCEPT:
            completion.value = self.wrap_accepted(request.sock, res)
        else:
            completion.value = res
        return 0

    cdef object wrap_accepted(self, object listener, int fd):
        try:
            return type(listener)(_raw_family(listener), _raw_type(listener),
                                  _raw_proto(listener), fileno=fd)
        except BaseException:
            close_fd(fd)
            raise

    def wait(self, Py_ssize_t min_complete=1, timeout=None):
        """Submit what is queued, wait until at least min_complete completions are ready
        (or timeout seconds passed; None waits for ever) and return the ready Completions in
        the order the kernel posted them. The GIL is released while waiting; Ctrl-C works."""
        cdef int64_t deadline = 0
        self.check_usable()
        if timeout is not None:
            if timeout < 0:
                raise ValueError("timeout must be >= 0 or None")
            deadline = _now_ns() + <int64_t>(timeout * 1e9)
        self.submit()
        self.reap()
        while <Py_ssize_t>len(self.ready) < min_complete and self.requests:
            if timeout is not None and _now_ns() >= deadline:
                break
            self.sleep(timeout is not None, deadline)
            if self.fd < 0:
                break                   # closed by another thread meanwhile
            self.reap()
        result, self.ready = self.ready, []
        return result

    def run_callbacks(self, on_error, handlers=None):
        """Submit what is queued, reap what is posted without sleeping (as ``wait(0, 0)``), and
        call each completion's ``request.callback`` with it, in the order the kernel posted
        them; completions of requests without one are dropped. A callback that raises is
        reported to ``on_error(callback, error)`` and the rest still run. Returns how many
        callbacks ran. (csock.aio's engine: no Python loop per completion.)

        ``handlers``, a dict mapping requests to callbacks, is asked instead of
        ``request.callback`` when given (a request's entry is removed with its last
        completion). csock.aio's engine keeps its handlers there, where only the loop refers
        to them: a request (which the ring, and the socket's close(), refer to, and which the
        cyclic GC cannot see through the ring) holding its handler held the stream, so the
        loop, for ever, and a loop dropped unclosed was never collected.

        Each completion is made and handed to its callback before the next is taken, so that
        it is freed before the next is made: reaping hundreds first filled the cyclic GC's
        youngest generation in the middle of every batch of a client of 1,000 connections.
        Completions posted after the call began wait for the next call."""
        cdef Completion completion
        cdef Request request
        cdef Py_ssize_t ran = 0
        cdef int count = 0
        cdef uint32_t stop
        cdef dict table = None
        if handlers is not None:
            if not isinstance(handlers, dict):
                raise TypeError(f"handlers must be a dict, not {type(handlers).__name__}")
            table = <dict>handlers
        self.check_usable()
        self.submit()
        self.begin_reap()
        stop = csock_load_acquire(self.cq_tail)
        try:
            while self.ready or self.reap_next(&count, &stop):
                if not self.ready:
                    continue                    # a completion nobody is told of (a cancel's)
                # Taken from the front: a callback's own reap (a submit that found the CQ
                # full) appends behind, and one that raises Ctrl-C leaves the rest queued.
                completion = self.ready.pop(0)
                request = completion.request
                if table is None:
                    callback = request.callback
                    if not completion.more:
                        request.callback = None     # its last: nothing holds the handler on
                elif completion.more:
                    callback = table.get(request)
                else:
                    callback = table.pop(request, None)
                if callback is None:
                    continue
                ran += 1
                try:
                    callback(completion)
                except Exception as error:
                    on_error(callback, error)
        finally:
            self.end_reap(count)
        return ran

    cdef int sleep(self, bint timed, int64_t deadline) except -1:
        """Sleep in the kernel until a completion is posted (or the deadline)."""
        cdef csock_uring_getevents_arg arg
        cdef csock_kernel_timespec ts
        cdef pollfd pfd
        cdef int64_t left
        self.waiting += 1
        try:
            if not timed:
                self.enter(0, 1, CSOCK_IORING_ENTER_GETEVENTS, NULL, 0, True)
                return 0
            left = deadline - _now_ns()
            if left < 0:
                left = 0
            if self.features & CSOCK_IORING_FEAT_EXT_ARG:
                memset(&arg, 0, sizeof(arg))
                ts.tv_sec = left // 1000000000
                ts.tv_nsec = left % 1000000000
                arg.ts = <uint64_t><size_t>&ts
                self.enter(0, 1, CSOCK_IORING_ENTER_GETEVENTS | CSOCK_IORING_ENTER_EXT_ARG,
                           &arg, sizeof(arg), True)
            else:
                pfd.fd = self.fd
                pfd.events = POLLIN
                with nogil:
                    poll(&pfd, 1, <int>((left + 999999) // 1000000))
                PyErr_CheckSignals()
        finally:
            self.waiting -= 1
        return 0

    # -- batches --

    def recv_many(self, sockets):
        """What each of the datagram sockets has queued now, as one list per socket of
        csock.Datagram (as recv_batch: ``data, address = datagram``, data a ReceivedView,
        ``truncated`` when its buffer cut it), in arrival order; one io_uring_enter for all of them
        (multishot recvmsg with MSG_DONTWAIT: each request ends when its queue is empty).
        A socket yields at most as many datagrams as the pool has free buffers; the rest
        stays queued for the next call. A socket's error (other than an empty queue) raises
        when no datagram came; when some did, they are returned and the error is raised by
        the next batch receive on that socket (recv_many naming it, before any request, or a
        csock socket's recv_batch), as recvmmsg(2) saves it.
        A socket that is not a datagram socket (ValueError) or is closed (EBADF) raises
        before any request is made, and so does a socket named twice (ValueError)."""
        socks = tuple(sockets)
        requests = []
        self.check_recvmsg_ring()           # (all checked before any request: none takes
        check_datagram_sockets(socks)       # a datagram)
        try:
            for sock in socks:
                request = self.arm_recvmsg(sock, True)
                (<Request>request).sink = []
                requests.append(request)
        except BaseException:
            for request in requests:
                self.cancel_request(<Request>request)
            self.collect(requests)
            raise
        self.collect(requests)
        result = []
        failures = []
        for sock, request in zip(socks, requests):
            result.append((<Request>request).sink)
            if (<Request>request).sink_error is not None:
                failures.append((sock, (<Request>request).sink_error))
            (<Request>request).sink = None
            (<Request>request).sink_error = None
        return settle_errors(result, failures)

    def send_many(self, pairs):
        """Send each (sock, data) or (sock, data, address) of pairs and wait for every
        completion; returns the byte counts in order. Sends to different sockets go with one
        io_uring_enter; a socket named k times is sent to in k rounds, each send after the
        previous one completed, because the kernel does not order requests on one socket
        among themselves. Every item is checked (its socket, buffer and address) before any
        is sent: a bad one raises with nothing sent. The first error of a send raises, after
        every send of its round finished (later rounds are not sent); its ``counts`` is the
        list this would have returned, None for each item not sent. A datagram socket with no
        room raises BlockingIOError (that item not sent): datagram sends do not wait (send())."""
        # Each item as it is now: preparing one runs the caller's code (a port's __index__, a
        # buffer's __buffer__), which must not be able to change an item C reads later.
        items = tuple([tuple(item) for item in pairs])
        for item in items:
            if len(item) not in (2, 3):
                raise ValueError("send_many takes (sock, data) or (sock, data, address) items")
        cdef list prepared = []
        counts = [None] * len(items)
        try:
            for item in items:
                address = item[2] if len(item) == 3 else None
                prepared.append(self.prepare_send(SENDMSG if address is not None else SEND,
                                                  item[0], item[1], address))
            for round in _rounds(items):
                self.send_round(prepared, round, counts)
        except OSError as error:
            error.counts = counts           # what went out (a count) and what did not (None)
            raise
        finally:
            for request in prepared:
                if not (<Request>request).done and (<Request>request).sink is None:
                    self.abandon(<Request>request)      # (never written: its round never came)
        return counts

    cdef int send_round(self, list prepared, list indexes, list counts) except -1:
        """Send prepared[i] for every i of indexes (each to a different socket), with one
        io_uring_enter, and store the counts."""
        cdef list requests = []
        cdef Request request
        try:
            for i in indexes:
                request = prepared[i]
                self.write_send(request)
                request.sink = []               # (written: the ring has it now)
                requests.append(request)
        except BaseException:
            self.collect(requests)
            raise
        self.collect(requests)
        error = None
        for i, request in zip(indexes, requests):
            completion = request.sink[0]
            request.sink = None
            if (<Completion>completion).error is not None:
                error = error or (<Completion>completion).error
            else:
                counts[i] = (<Completion>completion).value
        if error is not None:
            raise error
        return 0

    cdef int collect(self, list requests) except -1:
        """Submit, then reap until every one of requests is done."""
        self.submit()
        self.reap()
        for request in requests:
            while not (<Request>request).done:
                self.sleep(False, 0)
                self.check_usable()
                self.submit()
                self.reap()
        return 0

    # -- end --

    def close(self):
        """Cancel every pending request, give back what they hold (waiting up to a second
        for their last completions), then unmap the rings and close the ring's fd. A forked
        child's copy is only unmapped: the parent's requests are not the child's to cancel."""
        if self.fd < 0:
            return
        if self.pid == _current_pid and self.requests:
            for request in list(self.requests.values()):
                self.cancel_request(<Request>request)
            self.submit()
            deadline = _now_ns() + 1000000000
            self.reap()
            while self.requests and _now_ns() < deadline and self.fd >= 0:
                self.sleep(True, deadline)
                self.reap()
        if self.fd >= 0 and self.waiting and self.pid == _current_pid:
            self.wake_waiters()         # threads asleep in wait() return (the ring is closed)
        elif not self.waiting:
            self.drop_ready()
        self.teardown()

    cdef int drop_ready(self) except -1:
        """Completions reaped that no wait() can take now (one on a closed ring is a
        ValueError): the connections accepted are closed (their peers see the end of
        stream), views and buffers let go."""
        ready, self.ready = self.ready, []
        for completion in ready:
            value = (<Completion>completion).value
            if isinstance(value, _socket.socket):
                value.close()
        return 0

    cdef void teardown(self) noexcept:
        cdef Request request
        cdef bint ours = self.pid == _current_pid
        cdef int fd = self.fd
        # Unmapped and closed first, before any Python code runs (another thread could then
        # find the ring half torn down).
        self.fd = -1
        if self.sqes != <csock_uring_sqe *>MAP_FAILED:
            munmap(self.sqes, self.sqes_size)
            self.sqes = <csock_uring_sqe *>MAP_FAILED
        if self.sq_ring != MAP_FAILED:
            munmap(self.sq_ring, self.sq_ring_size)
            self.sq_ring = MAP_FAILED
        if fd >= 0:
            close_fd(fd)
        if self.pool is not None:
            self.pool.registered = False        # views still held keep the memory alive
        for request in list(self.requests.values()):
            request.ring = None
            request.done = True
            request.callback = None             # no completion will come to call it
            request.close_own_fd()              # (the kernel keeps its own file reference)
            if ours:
                # The kernel may read a send's buffer, or receive into a stream's arena,
                # until the ring's own teardown has finished: those stay for the life of
                # the process.
                if request.has_data or request.native != NULL or request.direct:
                    _orphans.append(request)    # (direct: its stream, so the arena)
                if request.held:
                    request.held = False
                    forget_hold(request)
                    inflight_release(request.hold)
            elif request.held:
                request.held = False            # the parent's holds, not counted here
                forget_hold(request)
        self.requests.clear()
        # Completions close() reaped stay for a thread asleep in wait() (woken by the close),
        # but their requests' callbacks (a stream's handler, so its loop) must not live on
        # in a ring kept alive: no run_callbacks() will call them now.
        for completion in self.ready:
            (<Completion>completion).request.callback = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        if self.fd >= 0 or self.sq_ring != MAP_FAILED:
            self.teardown()

    def __repr__(self):
        state = "closed" if self.fd < 0 else f"fd={self.fd} pending={len(self.requests)}"
        return f"<csock.uring.Ring {state}>"


cdef int pin_file(int fd) except -1:
    """A close-on-exec dup of a stdlib socket's fd, for a request to name: the stdlib's close()
    (which csock cannot defer) may then run, and its number go to a new socket, before the
    SQE is submitted or re-armed, and the request still reaches the socket's own file. (With
    the GIL held since inflight_hold read the fd, the stdlib's close() cannot run between.)"""
    cdef int pinned = fcntl(fd, F_DUPFD_CLOEXEC, 0)
    if pinned < 0:
        raise_errno(errno)
    return pinned


cdef list _rounds(tuple items):
    """Indexes of items in rounds: round k holds each socket's k-th item, in order."""
    cdef dict seen = {}
    cdef list rounds = []
    for i, item in enumerate(items):
        k = seen.get(id(item[0]), 0)
        seen[id(item[0])] = k + 1
        if k == len(rounds):
            rounds.append([])
        (<list>rounds[k]).append(i)
    return rounds


cdef list _orphans = []            # requests whose ring closed before their last completion


def kernel_features():
    """The IORING_FEAT_* bits this kernel reports, by name, for a small probe ring; raises
    OSError when io_uring is unavailable."""
    ring = Ring(8, 0)
    try:
        names = {"single_mmap": CSOCK_IORING_FEAT_SINGLE_MMAP, "nodrop": CSOCK_IORING_FEAT_NODROP,
                 "submit_stable": CSOCK_IORING_FEAT_SUBMIT_STABLE,
                 "fast_poll": CSOCK_IORING_FEAT_FAST_POLL, "ext_arg": CSOCK_IORING_FEAT_EXT_ARG}
        return frozenset(name for name, bit in names.items() if ring.features & bit)
    finally:
        ring.close()
