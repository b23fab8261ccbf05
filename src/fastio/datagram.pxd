# datagram.pyx: Datagram, one received datagram or record. batch_recv, offload and metadata
# fill its fields; make_datagram is how they all make one.

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


cdef inline Datagram make_datagram(object data, object address, bint truncated):
    cdef Datagram d = Datagram.__new__(Datagram)
    d.data = data
    d.address = address
    d.truncated = truncated
    return d
