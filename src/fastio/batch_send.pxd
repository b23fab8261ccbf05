# batch_send.pyx: send_batch (sendmmsg), errors after part of a batch deferred. spp's
# send_records parses and sends through parse_outgoing / send_outgoing; offload's GSO sends
# read _Outgoing and fall back to send_chunks; both defer and raise errors the same way.
from includes.socket cimport mmsghdr, sockaddr_storage, socklen_t
from includes.uio cimport iovec


cdef class _Outgoing:
    cdef Py_ssize_t count, acquired, naddresses
    cdef Py_buffer *views
    cdef int *address_of                 # index into addresses, -1: the connected peer
    cdef sockaddr_storage *addresses
    cdef socklen_t *address_lengths
    cdef char *prefixes                  # optional per-message header bytes
    cdef Py_ssize_t prefix_length
    # messages the kernel took so far, kept up to date chunk by chunk: right whatever
    # exception ends the send
    cdef Py_ssize_t sent


cdef int raise_deferred_error(IoWait *w, bint received=*) except -1
cdef bint defer_error(IoWait *w, object error, bint received=*)
cdef _Outgoing parse_outgoing(tuple items, object address, int family, int fd)
cdef Py_ssize_t send_outgoing(object sock, IoWait *w, _Outgoing out) except -1
cdef Py_ssize_t send_chunks(object sock, IoWait *w, _Outgoing out, mmsghdr *msgs, iovec *iov,
                            MmsgOp *op, int parts) except -1
