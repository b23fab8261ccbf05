# <poll.h>: waiting for readiness (man 2 poll).

cdef extern from "<poll.h>" nogil:
    ctypedef unsigned long nfds_t

    struct pollfd:
        int fd
        short events
        short revents

    int poll(pollfd *fds, nfds_t nfds, int timeout)

    enum:
        POLLIN
        POLLOUT
        POLLERR
        POLLHUP
        POLLNVAL
        POLLRDHUP    # the peer shut down writing (Linux; needs _GNU_SOURCE, which setup.py sets)
