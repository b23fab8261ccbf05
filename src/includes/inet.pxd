# <netinet/in.h>, <arpa/inet.h>, <sys/un.h>: socket addresses and byte order.
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from includes.socket cimport sa_family_t


cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr

    struct in6_addr:
        uint8_t s6_addr[16]

    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

    enum:
        IPPROTO_IP
        IPPROTO_IPV6
        IPPROTO_TCP
        IPPROTO_UDP
        IPPROTO_ICMP
        IPPROTO_ICMPV6
        IPPROTO_RAW
        IPPROTO_SCTP
        IP_HDRINCL
        IP_PKTINFO
        IP_TOS
        IP_RECVTOS
        IPV6_RECVPKTINFO
        IPV6_PKTINFO
        IPV6_TCLASS
        IPV6_RECVTCLASS
        INET_ADDRSTRLEN
        INET6_ADDRSTRLEN

    struct in_pktinfo:
        int ipi_ifindex
        in_addr ipi_spec_dst
        in_addr ipi_addr

    struct in6_pktinfo:
        in6_addr ipi6_addr
        unsigned int ipi6_ifindex

cdef extern from "<arpa/inet.h>" nogil:
    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)
    uint32_t htonl(uint32_t)
    uint32_t ntohl(uint32_t)
    const char *inet_ntop(int af, const void *src, char *dst, unsigned int size)
    int inet_pton(int af, const char *src, void *dst)

cdef extern from "<sys/un.h>" nogil:
    struct sockaddr_un:
        sa_family_t sun_family
        char sun_path[108]


# AF_PACKET and AF_NETLINK addresses, in the forms the stdlib's socket module gives them.
cdef extern from "<netpacket/packet.h>" nogil:
    struct sockaddr_ll:
        unsigned short sll_family
        unsigned short sll_protocol
        int sll_ifindex
        unsigned short sll_hatype
        unsigned char sll_pkttype
        unsigned char sll_halen
        unsigned char sll_addr[8]


cdef extern from "<linux/netlink.h>" nogil:
    struct sockaddr_nl:
        unsigned short nl_family
        uint32_t nl_pid
        uint32_t nl_groups


cdef extern from "<net/if.h>" nogil:
    enum:
        IF_NAMESIZE
    unsigned int if_nametoindex(const char *ifname)
    char *if_indextoname(unsigned int ifindex, char *ifname)

    struct ifreq:
        char ifr_name[16]
        int ifr_ifindex


cdef extern from "<sys/ioctl.h>" nogil:
    enum:
        SIOCGIFINDEX
        SIOCGIFNAME
    int ioctl(int fd, unsigned long request, ...)
