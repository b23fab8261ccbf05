# datagram.pyx: Datagram, one received datagram or record. batch_recv, offload and metadata
# fill its fields; make_datagram (in datagram.pyx: an inline here would be compiled into
# csock._packet and csock._uring, which cannot reach Datagram's tp_new) is how they make one.

cdef public class Datagram [object csock_Datagram, type csock_Datagram_Type]:
    # read-only attributes (member descriptors: see members.pyx)
    cdef object data
    cdef object address
    cdef object truncated               # bool
    # Metadata (DatagramSocket.enable_metadata); None when not enabled or not reported.
    cdef object timestamp               # float seconds since the epoch (SO_TIMESTAMPNS)
    cdef object destination             # the local IP address it was sent to (IP_PKTINFO)
    cdef object interface               # index of the interface it arrived on
    cdef object tos                     # IPv4 TOS / IPv6 traffic class byte, ECN bits included
