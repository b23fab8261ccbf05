# Declarations of csock._fastio for other Cython modules: `cimport csock._fastio`.
#
# Functions that can fail return -1 with a Python exception set (`except -1`); IO_AGAIN (-2)
# means "would block" on a non-blocking socket (no exception set: the caller decides).
from libc.stdint cimport int64_t

cdef enum:
    IO_AGAIN = -2
    # cmsg room for one received datagram: UDP_GRO's segment size and the receive metadata
    # (enable_metadata: timestamp, destination, TOS)
    CONTROL_ROOM = 256

cdef struct IoWait:
    int fd
    int64_t timeout_ns     # the socket's timeout: -1 blocking, 0 non-blocking, > 0 timeout
    int64_t deadline_ns    # CLOCK_MONOTONIC; 0 until the call first has to wait
    int calls              # system calls made so far by this operation
    void *sock             # borrowed: the csock/stdlib socket object, NULL if its layout is unknown
    int64_t spin_ns        # the socket's spin_us in ns: poll without sleeping this long first
    void *state            # borrowed: the csock socket's SocketState, NULL for a stdlib socket
    int *closing           # nonzero once close() ran while this call was in flight
    # a send loop that resumes a partial send (sendall, batches): with other threads its sends
    # may use MSG_DONTWAIT and wait in io_wait
    bint resumable

ctypedef Py_ssize_t (*syscall_t)(int fd, void *op) noexcept nogil


cdef class Arena:
    """Receive memory; written only while no MessageView refers to it."""
    cdef char *data
    cdef Py_ssize_t size
    cdef bint mapped                    # taken with mmap(2), not malloc


cdef class ReadOnlyView:
    """Read-only bytes-like view of ptr[0:length] (memory a subclass keeps alive)."""
    cdef const char *ptr
    cdef Py_ssize_t length


cdef public class MessageView(ReadOnlyView) [object csock_MessageView, type csock_MessageView_Type]:
    """Read-only bytes-like view of one received message; keeps its Arena alive. (Public C
    names: make_view fills a recycled instance's arena field by its offset.)"""
    cdef Arena arena


# Fill w from a socket object (fd, timeout); one deadline serves a whole call.
cdef int io_begin(object sock, IoWait *w) except -1
# Run one system call under the socket's timeout rules: EINTR retried (signal handlers run),
# EAGAIN waited for with poll() until the deadline (TimeoutError after it), IO_AGAIN returned
# on non-blocking sockets. The GIL is released around the call when release_gil is true.
cdef Py_ssize_t io_call(IoWait *w, syscall_t call, void *op, short events,
                        bint release_gil) except -1
# Wait until fd is ready for events or the deadline passes (TimeoutError).
cdef int io_wait(IoWait *w, short events) except -1

# Whole-buffer operations on a socket object, honouring its timeout.
cdef int fio_sendall(object sock, const char *buf, Py_ssize_t n) except -1
cdef int fio_recv_exactly_into(object sock, char *buf, Py_ssize_t n) except -1

cdef MessageView make_view(Arena arena, const char *ptr, Py_ssize_t length)
cdef int raise_errno(int err) except -1


# io_uring requests (csock._uring) hold their socket's in-flight reference from submission to
# their last completion (src/fastio/uring_support.pyx). inflight_hold returns the token to
# release (the SocketState, None for a stdlib socket) and raises EBADF on a closed socket;
# close() calls the close hook when it defers close(2) to the holders, with that token.
ctypedef void (*close_hook_t)(object state) noexcept
cdef object inflight_hold(object sock, int *fd)
cdef void inflight_release(object state) noexcept
cdef void set_close_hook(close_hook_t hook) noexcept
# FramedStream.feed() from memory (a ring buffer): the whole messages now buffered; raises as
# feed() does, TypeError if framed is not a csock._fastio.FramedStream.
cdef list framed_feed(object framed, const char *data, Py_ssize_t length)
# The rest of the frame at the front of a FramedStream, received straight into its arena:
# framed_lend lends the kernel the room it still needs (0: nothing lent, when its length is not
# known yet or fewer than min_length bytes are missing) and stores where it starts in at[0];
# framed_lent_filled(length) ends the loan once the kernel wrote length bytes there (0 after
# an error) and returns the whole messages now buffered. Meanwhile the stream's own receives,
# feed() of bytes and feed_eof() raise RuntimeError, and the arena does not move.
cdef Py_ssize_t framed_lend(object framed, Py_ssize_t min_length, char **at) except -1
cdef list framed_lent_filled(object framed, Py_ssize_t length)
# Socket addresses, the stdlib's Python form <-> a struct sockaddr (address.pyx's converters):
# out has room for a struct sockaddr_storage; returns its length (raises on a bad address).
cdef unsigned int address_to_sockaddr(object address, int family, void *out) except 0
cdef object address_from_sockaddr(const void *sa, unsigned int length)
# The same for a socket's fd: AF_PACKET interface names are looked up in the network
# namespace of that socket (SIOCGIFINDEX/SIOCGIFNAME on fd, as the stdlib), not the thread's.
cdef unsigned int address_to_sockaddr_on(object address, int family, void *out,
                                         int fd) except 0
cdef object address_from_sockaddr_on(const void *sa, unsigned int length, int fd)
# What a received datagram's control messages (cmsgs) say, read by read_control.
cdef struct ControlInfo:
    int gso                             # UDP_GRO: the coalesced datagrams' size (0: not coalesced)
    bint has_timestamp
    double timestamp                    # SO_TIMESTAMPNS, seconds since the epoch
    int destination_family              # IP_PKTINFO/IPV6_PKTINFO's (0: not reported)
    unsigned char destination[16]
    int interface
    int tos                             # IP_TOS/IPV6_TCLASS (-1: not reported)
cdef void read_control(const void *control, size_t length, ControlInfo *info) noexcept
# A csock.Datagram (data, address, truncated), as recv_batch hands each datagram over, with
# the metadata info reports (info NULL: none).
cdef object datagram_of(object data, object address, bint truncated, const ControlInfo *info)
