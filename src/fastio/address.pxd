# address.pyx: sockaddr <-> Python address tuples. mmsg encodes each destination with
# sockaddr_from_python and decodes a batch's senders through an AddressCache.
from includes.socket cimport sockaddr, sockaddr_storage, socklen_t


cdef socklen_t sockaddr_from_python(object address, int family, sockaddr_storage *out,
                                    int fd=*) except 0
cdef object sockaddr_to_python(const sockaddr *sa, socklen_t length, int fd=*)


cdef class AddressCache:
    cdef sockaddr_storage last
    cdef socklen_t last_length
    cdef object last_address
    cdef int fd                          # the socket's (AF_PACKET names: its namespace), or -1

    cdef object decode(self, const sockaddr *sa, socklen_t length)
