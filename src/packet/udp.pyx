# UDP (RFC 768): source port, destination port, length (header + data), checksum over the
# IP pseudo-header, the header and the data. A computed checksum of 0 is sent as 0xFFFF
# (0 means "no checksum", allowed over IPv4 only).
#
#   0      7 8     15 16    23 24    31
#  |   Source Port   | Destination Port |
#  |     Length      |     Checksum     |

cimport cython
from cpython.ref cimport PyObject
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.object cimport PyTypeObject
from includes.instancecache cimport cache_instances
from csock._fastio cimport install_members
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from includes.byteorder cimport load_be16, store_be16


cdef enum:
    UDP_HEADER = 8


@cython.final
@cython.no_gc
cdef public class UDP(Layer) [object csock_UDP, type csock_UDP_Type]:
    """A UDP header. Defaults as scapy's: sport 53, dport 53; len and chksum None (computed
    by bytes(), the checksum with the enclosing IP layer's pseudo-header).

    Attributes
    ----------
    sport : int
        Source port.
    dport : int
        Destination port.
    len : int or None
        Header and payload length; None: computed.
    chksum : int or None
        Checksum with the IP pseudo-header; None: computed (0 is sent as 0xFFFF).
    """
    cdef object sport, dport, len, chksum     # the fields (see packet.pyx)

    _field_names = ("sport", "dport", "len", "chksum")
    _rules = {"sport": ("UDP.sport", 0xFFFF, False), "dport": ("UDP.dport", 0xFFFF, False),
              "len": ("UDP.len", 0xFFFF, True), "chksum": ("UDP.chksum", 0xFFFF, True)}
    _first = "udp"

    def __cinit__(self):
        self._kind = K_UDP             # (here, not in __init__: UDP.__new__(UDP) is one)

    def __init__(self, sport=53, dport=53, len=None, chksum=None):
        self._payload = EMPTY
        self.sport = field_value(sport, 0xFFFF, "UDP.sport")
        self.dport = field_value(dport, 0xFFFF, "UDP.dport")
        self.len = opt_value(len, 0xFFFF, "UDP.len")
        self.chksum = opt_value(chksum, 0xFFFF, "UDP.chksum")

    cdef Py_ssize_t header_len(self) except -1:
        return UDP_HEADER

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        cdef uint16_t ck
        cdef long length = opt_long(<PyObject *>self.len, 0xFFFF, "UDP.len")
        cdef long chksum = opt_long(<PyObject *>self.chksum, 0xFFFF, "UDP.chksum")
        if length < 0 and self._size > 0xFFFF:
            raise PacketError(f"UDP datagram of {self._size} bytes is longer than 65535")
        store_be16(p, <uint16_t>field_long(<PyObject *>self.sport, 0xFFFF, "UDP.sport"))
        store_be16(p + 2, <uint16_t>field_long(<PyObject *>self.dport, 0xFFFF, "UDP.dport"))
        store_be16(p + 4, <uint16_t>(length if length >= 0 else self._size))
        if chksum >= 0:
            store_be16(p + 6, <uint16_t>chksum)
        elif ip is None:
            store_be16(p + 6, 0)      # no IP layer, no pseudo-header: no checksum (scapy too)
        else:
            p[6] = 0
            p[7] = 0
            ck = csum_finish(csum_add(ip.pseudo(PROTO_UDP, self._size), p, self._size))
            store_be16(p + 6, ck if ck != 0 else 0xFFFF)
        return 0

    cdef int check(self, const uint8_t *p, Layer ip) except -1:
        cdef uint16_t stored = load_be16(p + 6)
        cdef uint16_t good
        if ip is None or (stored == 0 and ip._kind == K_IPV4):
            return 0
        # the sum over everything including the stored checksum must be 0xFFFF (finish -> 0);
        # stored 0xFFFF stands for a computed 0 (both are ones' complement zero)
        good = csum_finish(csum_add(ip.pseudo(PROTO_UDP, self._size), p, self._size))
        if good != 0:
            good = udp_expected(p, self._size, ip)
            checksum_error("UDP", stored, good)
        return 0

    cdef Layer clone(self):
        cdef UDP c = UDP.__new__(UDP)
        self.copy_base(c)
        c.sport, c.dport, c.len, c.chksum = self.sport, self.dport, self.len, self.chksum
        return c

    cdef tuple values(self):
        return (self.sport, self.dport, self.len, self.chksum)


cdef extern from *:
    # the field slots in UDP's instance struct (public class csock_UDP)
    Py_ssize_t UDP_SPORT "offsetof(struct csock_UDP, sport)"
    Py_ssize_t UDP_DPORT "offsetof(struct csock_UDP, dport)"
    Py_ssize_t UDP_LEN "offsetof(struct csock_UDP, len)"
    Py_ssize_t UDP_CHKSUM "offsetof(struct csock_UDP, chksum)"

cdef Py_ssize_t _udp_slots[4]
_udp_slots[:] = [UDP_SPORT, UDP_DPORT, UDP_LEN, UDP_CHKSUM]
install_members(UDP, UDP._field_names, _udp_slots, True)
cache_instances(<PyTypeObject *>UDP)     # @cython.freelist would not apply to a subclass


cdef uint16_t udp_expected(const uint8_t *p, Py_ssize_t size, Layer ip) except? 0:
    """The checksum a UDP datagram at p should carry."""
    cdef uint64_t acc = ip.pseudo(PROTO_UDP, size)
    cdef uint16_t ck
    acc = csum_add(acc, p, 6)
    acc = csum_add(acc, p + 8, size - 8)
    ck = csum_finish(acc)
    return ck if ck != 0 else 0xFFFF


cdef UDP parse_udp(object owner, const uint8_t *base, Py_ssize_t off, Py_ssize_t end):
    cdef const uint8_t *p = base + off
    cdef Py_ssize_t n = end - off
    cdef Py_ssize_t length
    cdef UDP u
    if n < UDP_HEADER:
        raise PacketError(f"UDP header needs 8 bytes, got {n}")
    length = load_be16(p + 4)
    if length < UDP_HEADER:
        raise PacketError(f"UDP length {length} is less than the 8-byte header")
    if length > n:
        raise PacketError(f"UDP length {length} is beyond the {n} bytes given")
    u = UDP.__new__(UDP)
    u._clean = True
    u._owner = owner
    u._off = off
    u._end = end
    u.sport = small_int(load_be16(p))
    u.dport = small_int(load_be16(p + 2))
    u.len = small_int(length)
    u.chksum = small_int(load_be16(p + 6))
    if length < n:
        u._trailer = PyBytes_FromStringAndSize(<const char *>p + length, n - length)
    set_lazy(u, owner, off + UDP_HEADER, off + length)
    return u
