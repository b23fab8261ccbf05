/* UDP segmentation offload (GSO send, GRO receive) and zero-copy completion constants, with
 * fallbacks for C libraries whose headers predate them (values from the Linux uapi headers:
 * include/uapi/linux/udp.h, include/uapi/linux/errqueue.h, asm-generic/socket.h). */
#ifndef CSOCK_OFFLOAD_H
#define CSOCK_OFFLOAD_H
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/udp.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#ifndef SO_NO_CHECK
#define SO_NO_CHECK 11
#endif
#define CSOCK_SO_EE_ORIGIN_ZEROCOPY 5
#define CSOCK_SO_EE_CODE_ZEROCOPY_COPIED 1
#ifndef IP_RECVERR
#define IP_RECVERR 11
#endif
#ifndef IPV6_RECVERR
#define IPV6_RECVERR 25
#endif

/* struct sock_extended_err from <linux/errqueue.h>, spelled out so that the kernel header
 * (which clashes with some libc headers) is not needed. */
typedef struct {
    uint32_t ee_errno;
    uint8_t  ee_origin;
    uint8_t  ee_type;
    uint8_t  ee_code;
    uint8_t  ee_pad;
    uint32_t ee_info;
    uint32_t ee_data;
} csock_sock_extended_err;
#endif
