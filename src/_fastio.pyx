# cython: language_level=3
"""csock._fastio: the hot path.

System calls on socket file descriptors (send, recv, sendmsg, recvmsg, sendmmsg, recvmmsg)
with the GIL released, EINTR retried and the stdlib's blocking / timeout / non-blocking
rules applied in one place (fastio/io.pyx). Each part lives in its own file:

    fastio/errors.pyx     errno -> the right OSError subclass
    fastio/members.pyx    member descriptors: attribute reads CPython specialises
    fastio/sockref.pyx    fd and timeout read from a socket object
    fastio/io.pyx         the one system-call loop: EINTR, EAGAIN, deadlines, poll
    fastio/buffers.pyx    Arena (receive memory) and MessageView (read-only view into it)
    fastio/zerocopy.pyx   MSG_ZEROCOPY sends: buffer exports held until the kernel's completion
    fastio/stream.pyx     send/sendall/recv/recv_into, send_buffers, recv_exactly
    fastio/framing.pyx    FramedStream: 4-byte big-endian length-prefixed messages
    fastio/address.pyx    sockaddr <-> Python address tuples
    fastio/uring_support.pyx  what csock._uring cimports: in-flight holds, addresses
    fastio/mmsg.pyx       sendmmsg/recvmmsg batches, Datagram
    fastio/spp.pyx        SPPHeader: Xerox NS Sequenced Packet Protocol record header
    fastio/checksum.pyx   the Internet checksum (RFC 1071) and IPv4/IPv6 pseudo-header sums
    fastio/packet.pyx     csock.packet: PacketError, Layer (stacking, lookup, build), parse()
    fastio/ipv4.pyx       IPv4 header
    fastio/ipv6.pyx       IPv6 header (extension headers skipped when parsing)
    fastio/icmp.pyx       ICMP and ICMPv6 headers
    fastio/udp.pyx        UDP header
    fastio/tcp.pyx        TCP header

Another Cython module can `cimport csock._fastio` (declarations in csock/_fastio.pxd).
"""

include "fastio/errors.pyx"
include "fastio/members.pyx"
include "fastio/sockref.pyx"
include "fastio/io.pyx"
include "fastio/buffers.pyx"
include "fastio/zerocopy.pyx"
include "fastio/stream.pyx"
include "fastio/framing.pyx"
include "fastio/address.pyx"
include "fastio/uring_support.pyx"
include "fastio/mmsg.pyx"
include "fastio/spp.pyx"
include "fastio/checksum.pyx"
include "fastio/packet.pyx"
include "fastio/ipv4.pyx"
include "fastio/ipv6.pyx"
include "fastio/icmp.pyx"
include "fastio/udp.pyx"
include "fastio/tcp.pyx"
