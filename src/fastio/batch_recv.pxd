# batch_recv.pyx: recv_batch and recv_batch_into. offload's recv_batch_ext (GRO, metadata)
# receives through the socket's BatchReceiver (claimed_receiver): prepare, prepare_control,
# receive and collect_ext.
from includes.socket cimport mmsghdr, sockaddr_storage
from includes.uio cimport iovec


cdef class BatchReceiver:
    cdef Py_ssize_t capacity, slot
    cdef Py_ssize_t first                # this call's first slot
    cdef Py_ssize_t next_free            # slots below it may be referred to by views
    cdef Py_ssize_t headers_ready        # slots below it have their headers laid out
    cdef Py_ssize_t on_scratch           # slots below it point into the current scratch
    cdef Py_ssize_t scratch_slots        # slots of `slot` bytes the current scratch holds
    cdef bint with_senders               # the headers ask the kernel for senders' addresses
    cdef mmsghdr *msgs
    cdef iovec *iovs
    cdef sockaddr_storage *names
    cdef Arena scratch
    cdef Arena spare                     # the scratch before it, back once no view refers to it
    cdef Py_ssize_t scratches_made       # for scratch_allocations()
    cdef AddressCache addresses
    cdef bint busy
    cdef bint control_cut                # collect saw MSG_CTRUNC: a control message had no room
    cdef unsigned long busy_generation   # _fork_generation when busy was set
    cdef char *controls                  # control (cmsg) buffers: control_capacity of control_space
    cdef Py_ssize_t control_capacity, control_space
    cdef char last_destination[16]       # the last destination address decoded, and its string
    cdef int last_destination_family
    cdef object last_destination_text
    cdef mmsghdr *into_msgs              # recv_batch_into: MMSG_MAX headers into a caller's buffer,
    cdef iovec *into_iovs                # for into_base/into_slot (into_headers_ready of them)
    cdef char *into_base
    cdef Py_ssize_t into_slot, into_headers_ready

    cdef int prepare_control(self, Py_ssize_t count, Py_ssize_t space) except -1
    cdef int prepare(self, Py_ssize_t count, Py_ssize_t slot, bint names=*) except -1
    cdef int renew_scratch(self, Py_ssize_t size) except -1
    cdef void rebase(self, Py_ssize_t start, Py_ssize_t end) noexcept
    cdef void lay_out(self, Py_ssize_t start, Py_ssize_t end) noexcept
    cdef Py_ssize_t receive(self, IoWait *w, Py_ssize_t count, int flags) except -1
    cdef mmsghdr *lay_out_into(self, char *base, Py_ssize_t slot, Py_ssize_t count) except NULL
    cdef inline object sender(self, Py_ssize_t i)
    cdef list collect(self, Py_ssize_t received)
    cdef object destination_text(self, int family, const void *address)
    cdef int collect_ext(self, list into, Py_ssize_t received, Py_ssize_t bufsize) except -1

# An IP address (4 or 16 bytes) as text, None if inet_ntop(3) refuses it.
cdef object ip_text(int family, const void *address)


cdef BatchReceiver claimed_receiver(IoWait *w)
# The datagrams a socket keeps (taken from the kernel, not yet handed out): recv_batch_ext too.
cdef list take_kept(IoWait *w, Py_ssize_t max_messages)
cdef int keep(IoWait *w, list batch) except -1
cdef int run_handlers_before_return() except -1
