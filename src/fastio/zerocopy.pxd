# zerocopy.pyx: MSG_ZEROCOPY sends. stream's send_buffers(zerocopy=True) takes a socket's
# ZeroCopyState, absorbs the completions ready and sends through zc_send_buffers; sockref
# and io hand a closed socket's state to zerocopy_orphan and call drain_orphans.
from libc.stdint cimport uint32_t
from includes.socket cimport msghdr

cdef enum:
    ZC_RANGES = 64                 # completion ranges gathered per drain (contiguous ones merge)

cdef struct ZcOp:
    msghdr *msg
    int flags                      # MSG_ZEROCOPY, or 0 for one copied send (ENOBUFS)
    int nranges
    uint32_t lo[ZC_RANGES]
    uint32_t hi[ZC_RANGES]
    Py_ssize_t copied              # ids whose completion said "copied"


cdef class ZeroCopyState:
    cdef int mode                  # 1: SO_ZEROCOPY on; -1: refused by the kernel
    cdef bint copying              # the kernel copied: no more MSG_ZEROCOPY
    cdef uint32_t next_id
    cdef dict held                 # id -> list of _Export
    cdef readonly Py_ssize_t sends, completed, copied
    cdef Py_ssize_t threshold      # sendmsg calls of fewer bytes are copied
    cdef int errfd                 # a dup of the socket's fd: its error queue outlives close()
    cdef unsigned long generation  # _fork_generation when errfd was made
    cdef int owners                # open csock socket objects using it (dup()s share it)
    cdef bint orphaned             # in _orphans
    cdef object __weakref__        # _shared: one state per open file

    cdef int drain_orphaned(self) except -1
    cdef int absorb(self, ZcOp *o) except -1


cdef void zc_drain(int fd, ZcOp *o) noexcept nogil
cdef ZeroCopyState zc_state(object sock, int fd, int family)
cdef ZeroCopyState zc_state_held(object sock, IoWait *w)
cdef Py_ssize_t zc_send_buffers(object sock, IoWait *w, ZeroCopyState state, tuple items) except -1
cdef int zerocopy_orphan(object zerocopy) except -1
cdef int drain_orphans() except -1
