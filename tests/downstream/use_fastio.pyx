# A downstream extension built against csock's shipped declarations (csock/_fastio.pxd).
cimport csock._fastio as fastio


def echo_exactly(sock_in, sock_out, Py_ssize_t n):
    """Read exactly n bytes with csock's C API and send them back with it."""
    cdef bytes data = b"\0" * n
    fastio.fio_recv_exactly_into(sock_in, <char *>data, n)
    fastio.fio_sendall(sock_out, <const char *>data, n)
    return data


def view_of(bytes data):
    """A csock MessageView made from C: an Arena filled by hand."""
    cdef fastio.Arena arena = fastio.Arena(len(data))
    cdef Py_ssize_t i
    for i in range(len(data)):
        arena.data[i] = data[i]
    return fastio.make_view(arena, arena.data, len(data))
