# Datagram: one received datagram or record, as recv_batch hands it over. Its fields and
# make_datagram are in datagram.pxd.
cimport cython


@cython.final
@cython.freelist(1024)
# no_gc: fields are read-only and set only by csock (views, addresses, bools, numbers): none
# can refer back to a Datagram, so no cycle can form
@cython.no_gc
@cython.auto_pickle(False)   # Cython's generated __setstate__ indexes the state unchecked
cdef public class Datagram [object csock_Datagram, type csock_Datagram_Type]:
    """One received datagram or record: ``data`` (a read-only MessageView that stays valid
    while held), ``address`` (the sender, as the stdlib's recvfrom gives it; None on a
    connected AF_UNIX pair) and ``truncated`` (True when it was longer than bufsize: MSG_TRUNC).
    Unpacks as ``data, address = datagram``. With ``enable_metadata`` on the socket,
    ``timestamp`` (float seconds, kernel receive time), ``destination`` (local IP address
    string), ``interface`` (index) and ``tos`` (TOS / traffic class byte, ECN in the low two
    bits) are filled in; they are None otherwise.

    Attributes
    ----------
    data : MessageView
        The datagram's bytes, a read-only view never overwritten while held (from
        ``csock.uring``, a ReceivedView, the MessageView of a ring buffer, given back when
        released).
    address : tuple, str, bytes or None
        The sender, as the stdlib's recvfrom gives it (None on a connected AF_UNIX pair).
    truncated : bool
        True when the datagram was longer than bufsize and was cut (MSG_TRUNC).
    timestamp : float or None
        The kernel's receive time in seconds since the epoch (SO_TIMESTAMPNS).
    destination : str or None
        The local IP address the datagram was sent to (IP_PKTINFO / IPV6_RECVPKTINFO).
    interface : int or None
        The index of the interface it arrived on.
    tos : int or None
        The IPv4 TOS / IPv6 traffic class byte, ECN in the low two bits.
    """

    def __iter__(self):
        return iter((self.data, self.address))

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return (self.data, self.address)[index]

    def __eq__(self, other):
        if isinstance(other, Datagram):
            return (self.data == (<Datagram>other).data
                    and self.address == (<Datagram>other).address
                    and self.truncated == (<Datagram>other).truncated)
        if isinstance(other, tuple) and len(other) == 2:
            return self.data == other[0] and self.address == other[1]
        return NotImplemented

    __hash__ = None

    def __reduce__(self):
        # data pickles as bytes (a view of receive memory cannot cross processes)
        return _restore_datagram, (self.data, self.address, self.truncated, self.timestamp,
                                   self.destination, self.interface, self.tos)

    def __repr__(self):
        flag = ", truncated" if self.truncated else ""
        more = "..." if len(self.data) > 32 else ""
        return f"Datagram({bytes(self.data)[:32]!r}{more}, {self.address!r}{flag})"


cdef extern from *:
    # the attribute slots in Datagram's instance struct (public class csock_Datagram)
    Py_ssize_t DATAGRAM_DATA "offsetof(struct csock_Datagram, data)"
    Py_ssize_t DATAGRAM_ADDRESS "offsetof(struct csock_Datagram, address)"
    Py_ssize_t DATAGRAM_TRUNCATED "offsetof(struct csock_Datagram, truncated)"
    Py_ssize_t DATAGRAM_TIMESTAMP "offsetof(struct csock_Datagram, timestamp)"
    Py_ssize_t DATAGRAM_DESTINATION "offsetof(struct csock_Datagram, destination)"
    Py_ssize_t DATAGRAM_INTERFACE "offsetof(struct csock_Datagram, interface)"
    Py_ssize_t DATAGRAM_TOS "offsetof(struct csock_Datagram, tos)"

cdef Py_ssize_t _datagram_slots[7]
_datagram_slots[:] = [DATAGRAM_DATA, DATAGRAM_ADDRESS, DATAGRAM_TRUNCATED, DATAGRAM_TIMESTAMP,
                      DATAGRAM_DESTINATION, DATAGRAM_INTERFACE, DATAGRAM_TOS]
install_members(Datagram, ("data", "address", "truncated", "timestamp", "destination",
                           "interface", "tos"), _datagram_slots, True)


def _restore_datagram(data, address, truncated, timestamp=None, destination=None, interface=None,
                      tos=None):
    """A Datagram back from pickle."""
    cdef Datagram d = make_datagram(data, address, bool(truncated))
    d.timestamp, d.destination, d.interface, d.tos = timestamp, destination, interface, tos
    return d


cdef inline Datagram make_datagram(object data, object address, bint truncated):
    cdef Datagram d = Datagram.__new__(Datagram)
    d.data = data
    d.address = address
    d.truncated = truncated
    return d
