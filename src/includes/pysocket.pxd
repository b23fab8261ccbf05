# The leading fields of CPython's socket object (see pysocket.h).
from libc.stdint cimport int64_t


cdef extern from "pysocket.h":
    ctypedef struct csock_socket_fields:
        int sock_fd
        int sock_family
        int sock_type
        int sock_proto
        int64_t sock_timeout

    csock_socket_fields *CSOCK_SOCKET_FIELDS(object o)
