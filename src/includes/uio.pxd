# <sys/uio.h> and <limits.h>: scatter/gather vectors (man 2 readv).

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<limits.h>" nogil:
    enum:
        IOV_MAX
