# <fcntl.h> and <unistd.h> bits used to inspect descriptors.

cdef extern from "<fcntl.h>" nogil:
    int fcntl(int fd, int cmd, ...)
    enum:
        F_GETFL
        F_GETFD
        F_DUPFD
        F_DUPFD_CLOEXEC
        FD_CLOEXEC
        O_NONBLOCK
