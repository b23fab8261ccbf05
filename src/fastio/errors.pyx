# Every errno becomes the right OSError subclass here, and only here.
#
# OSError's constructor picks the subclass from the errno (ECONNRESET -> ConnectionResetError,
# EPIPE -> BrokenPipeError, EAGAIN -> BlockingIOError, ...), exactly as the stdlib's socket
# module does through PyErr_SetFromErrno, and the message is strerror's, as there.
from libc.errno cimport EAGAIN
from os import strerror as _strerror


class IncompleteReadError(EOFError):
    """End of stream before a whole unit arrived; ``partial`` holds the bytes that did."""

    def __init__(self, partial, expected=None):
        self.partial = bytes(partial)
        self.expected = expected
        if expected is None:
            msg = f"{len(self.partial)} bytes read before end of stream"
        else:
            msg = f"{len(self.partial)} bytes read on a total of {expected} expected bytes"
        super().__init__(msg)

    def __reduce__(self):
        return type(self), (self.partial, self.expected)


class FrameTooLargeError(ValueError):
    """A frame announced a length above ``max_size``; the stream can no longer be read."""


cdef int raise_errno(int err) except -1:
    raise OSError(err, _strerror(err))


cdef int raise_timeout() except -1:
    # socket.timeout is TimeoutError since 3.10; the stdlib's message is "timed out".
    raise TimeoutError("timed out")


cdef int raise_would_block() except -1:
    raise_errno(EAGAIN)


cdef int note_sent(object error, Py_ssize_t count) except -1:
    """error.sent = count: what a send call that raises (a timeout, say, after part of its
    data went) moved first, so that a caller resends only the rest."""
    error.sent = count
    return 0


cdef int raise_would_block_after(Py_ssize_t count) except -1:
    """BlockingIOError whose .sent is count: a send loop the kernel stopped (send_cut_raises)
    after count units (bytes or datagrams) went."""
    error = OSError(EAGAIN, _strerror(EAGAIN))
    note_sent(error, count)
    raise error
