# <sys/socket.h>: the socket system calls and message headers (man 2 send, recv, sendmsg,
# recvmsg, sendmmsg, recvmmsg; man 3 cmsg).
from posix.time cimport timespec
from includes.uio cimport iovec


cdef extern from "<sys/socket.h>" nogil:
    int shutdown(int fd, int how)
    enum: SHUT_RDWR
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    cmsghdr *CMSG_FIRSTHDR(msghdr *msg)
    cmsghdr *CMSG_NXTHDR(msghdr *msg, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)

    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t sendmsg(int fd, const msghdr *msg, int flags)
    ssize_t recvmsg(int fd, msghdr *msg, int flags)
    int sendmmsg(int fd, mmsghdr *vmessages, unsigned int vlen, int flags)
    int recvmmsg(int fd, mmsghdr *vmessages, unsigned int vlen, int flags, timespec *tmo)
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
    int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
    int getsockname(int fd, sockaddr *addr, socklen_t *len)

    enum:
        AF_UNSPEC
        AF_UNIX
        AF_INET
        AF_INET6
        AF_PACKET
        AF_NETLINK
        SOCK_STREAM
        SOCK_DGRAM
        SOCK_RAW
        SOCK_SEQPACKET
        SOL_SOCKET
        SO_TYPE
        SO_DOMAIN
        SO_PROTOCOL
        SO_ERROR
        SO_RCVBUF
        SO_SNDBUF
        SO_SNDTIMEO
        SO_TIMESTAMPNS
        SO_ZEROCOPY
        SO_BUSY_POLL
        SCM_TIMESTAMPNS
        SCM_RIGHTS
        MSG_PEEK
        MSG_TRUNC
        MSG_CTRUNC
        MSG_DONTWAIT
        MSG_WAITALL
        MSG_NOSIGNAL
        MSG_WAITFORONE
        MSG_ERRQUEUE
        MSG_ZEROCOPY
        MSG_EOR
