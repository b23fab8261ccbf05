# errors.pyx: errno -> the right OSError subclass. raise_errno is public C API
# (csock/_fastio.pxd); io, sockref, mmsg, stream, framing and zerocopy raise these two as well.

cdef int raise_timeout() except -1
cdef int raise_would_block() except -1
cdef int note_sent(object error, Py_ssize_t count) except -1
cdef int raise_would_block_after(Py_ssize_t count) except -1
