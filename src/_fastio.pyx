# cython: language_level=3
"""csock._fastio: the hot path.

System calls on socket file descriptors (send, recv, sendmsg, recvmsg, sendmmsg, recvmmsg)
with the GIL released, EINTR retried and the stdlib's blocking / timeout / non-blocking
rules applied in one place (fastio/io.pyx). Each part lives in its own file:

    fastio/errors.pyx     errno -> the right OSError subclass
    fastio/members.pyx    member descriptors: attribute reads CPython specialises
    fastio/sockref.pyx    SocketState (all csock keeps per socket); fd and timeout read
    fastio/io.pyx         the one system-call loop: EINTR, EAGAIN, deadlines, poll
    fastio/buffers.pyx    Arena (receive memory) and MessageView (read-only view into it)
    fastio/zerocopy.pyx   MSG_ZEROCOPY sends: buffer exports held until the kernel's completion
    fastio/stream.pyx     send/sendall/recv/recv_into, send_buffers, recv_exactly
    fastio/framing.pyx    FramedStream: 4-byte big-endian length-prefixed messages
    fastio/address.pyx    sockaddr <-> Python address tuples
    fastio/uring_support.pyx  what csock._uring cimports: in-flight holds, addresses
    fastio/mmsg.pyx       sendmmsg/recvmmsg batches: what the batch files share
    fastio/datagram.pyx   Datagram: one received datagram or record
    fastio/batch_send.pyx send_batch (sendmmsg), errors after part of a batch deferred
    fastio/batch_recv.pyx recv_batch, recv_batch_into (recvmmsg), BatchReceiver
    fastio/offload.pyx    UDP GSO (segment_size) and GRO (gro=True)
    fastio/metadata.pyx   enable_metadata: timestamp, destination, interface, TOS
    fastio/spp.pyx        SPPHeader: Xerox NS Sequenced Packet Protocol record header

The packet stack (csock.packet) is a separate extension, csock._packet (src/packet/).
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
include "fastio/datagram.pyx"
include "fastio/batch_send.pyx"
include "fastio/batch_recv.pyx"
include "fastio/offload.pyx"
include "fastio/metadata.pyx"
include "fastio/spp.pyx"
