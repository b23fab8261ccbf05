# offload.pyx: UDP GSO and GRO. send_batch hands runs of equal-sized datagrams to send_gso;
# recv_batch and enable_metadata (metadata.pyx) read and set a socket's receive mode, and
# recv_batch with GRO or metadata on goes to recv_batch_ext.

cdef enum:
    GSO_MAX_SEGMENTS = 64             # UDP_MAX_SEGMENTS of older kernels (newer take 128)
    GSO_MAX_BYTES = 65507             # the largest UDP payload over IPv4

# A socket's receive mode (SocketState.rx_mode): RX_GRO once UDP_GRO is set (then every
# recv_batch on it splits coalesced messages, whatever its gro argument), the metadata wanted.
cdef enum:
    RX_GRO = 1
    RX_GRO_REFUSED = 2
    RX_TIMESTAMP = 4
    RX_DESTINATION = 8
    RX_TOS = 16
    RX_EXTENDED = RX_GRO | RX_TIMESTAMP | RX_DESTINATION | RX_TOS
    GRO_SLOT = 65535                  # a coalesced message is at most 64 KiB
    MAX_GRO_SCRATCH = 16 << 20        # 256 slots of 64 KiB (each may carry 64 datagrams)

cdef Py_ssize_t send_gso(object sock, IoWait *w, _Outgoing out, Py_ssize_t seg) except -1
cdef int rx_mode(object sock, IoWait *w, bint gro, int family, int kind) except -1
cdef list recv_batch_ext(object sock, IoWait *w, Py_ssize_t max_messages, Py_ssize_t bufsize,
                         int mode, int flags)


cdef inline int rx_mode_of(IoWait *w) noexcept:
    """The socket's receive mode (0 for a stdlib socket)."""
    return (<SocketState>w.state).rx_mode if w.state != NULL else 0
