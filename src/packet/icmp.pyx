# ICMP (RFC 792) and ICMPv6 (RFC 4443): type, code, checksum, then 4 "rest of header" bytes
# read as identifier and sequence number (their meaning for echo request/reply; for other
# types they are just those 4 bytes). The ICMP checksum covers the ICMP message; the ICMPv6
# checksum also covers the IPv6 pseudo-header (next header 58).
#
#   0      7 8     15 16    23 24    31
#  |  Type  |  Code  |     Checksum     |
#  |   Identifier    |  Sequence Number |

cimport cython
from cpython.ref cimport PyObject
from cpython.object cimport PyTypeObject
from includes.instancecache cimport cache_instances
from csock._fastio cimport install_members, use_generic_getattr
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from includes.byteorder cimport load_be16, store_be16


cdef enum:
    ICMP_HEADER = 8


@cython.no_gc
cdef public class _ICMPBase(Layer) [object csock_ICMPBase, type csock_ICMPBase_Type]:
    cdef object type, code, chksum, id, seq     # the fields (see packet.pyx)

    _field_names = ("type", "code", "chksum", "id", "seq")

    cdef int init_fields(self, object type, object code, object id, object seq,
                         object chksum, str name) except -1:
        self._payload = EMPTY
        self.type = field_value(type, 0xFF, name + ".type")
        self.code = 0 if code is 0 else field_value(code, 0xFF, name + ".code")
        self.chksum = opt_value(chksum, 0xFFFF, name + ".chksum")
        self.id = 0 if id is 0 else field_value(id, 0xFFFF, name + ".id")
        self.seq = 0 if seq is 0 else field_value(seq, 0xFFFF, name + ".seq")
        return 0

    cdef Py_ssize_t header_len(self) except -1:
        return ICMP_HEADER

    cdef uint64_t start_sum(self, Layer ip) except? 0xFFFFFFFFFFFFFFFF:
        if self._kind == K_ICMPV6 and ip is not None:
            return ip.pseudo(PROTO_ICMPV6, self._size)
        return 0

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        cdef bint v6 = self._kind == K_ICMPV6
        cdef long chksum = opt_long(<PyObject *>self.chksum, 0xFFFF,
                                    "ICMPv6.chksum" if v6 else "ICMP.chksum")
        p[0] = <uint8_t>field_long(<PyObject *>self.type, 0xFF,
                                   "ICMPv6.type" if v6 else "ICMP.type")
        p[1] = <uint8_t>field_long(<PyObject *>self.code, 0xFF,
                                   "ICMPv6.code" if v6 else "ICMP.code")
        store_be16(p + 4, <uint16_t>field_long(<PyObject *>self.id, 0xFFFF,
                                               "ICMPv6.id" if v6 else "ICMP.id"))
        store_be16(p + 6, <uint16_t>field_long(<PyObject *>self.seq, 0xFFFF,
                                               "ICMPv6.seq" if v6 else "ICMP.seq"))
        if chksum >= 0:
            store_be16(p + 2, <uint16_t>chksum)
        else:
            p[2] = 0
            p[3] = 0
            if self._kind == K_ICMP or ip is not None:
                store_be16(p + 2, csum_finish(csum_add(self.start_sum(ip), p, self._size)))
        return 0

    cdef int check(self, const uint8_t *p, Layer ip) except -1:
        cdef uint64_t acc
        if self._kind == K_ICMPV6 and ip is None:
            return 0
        if csum_finish(csum_add(self.start_sum(ip), p, self._size)) != 0:
            acc = csum_add(self.start_sum(ip), p, 2)
            acc = csum_add(acc, p + 4, self._size - 4)
            checksum_error("ICMP" if self._kind == K_ICMP else "ICMPv6", load_be16(p + 2),
                           csum_finish(acc))
        return 0

    cdef int copy_icmp(self, _ICMPBase c) except -1:
        self.copy_base(c)
        c.type, c.code, c.chksum, c.id, c.seq = self.type, self.code, self.chksum, self.id, self.seq
        return 0

    cdef tuple values(self):
        return (self.type, self.code, self.chksum, self.id, self.seq)


cdef extern from *:
    # the field slots in the ICMP layers' instance struct (public class csock_ICMPBase)
    Py_ssize_t ICMP_TYPE "offsetof(struct csock_ICMPBase, type)"
    Py_ssize_t ICMP_CODE "offsetof(struct csock_ICMPBase, code)"
    Py_ssize_t ICMP_CHKSUM "offsetof(struct csock_ICMPBase, chksum)"
    Py_ssize_t ICMP_ID "offsetof(struct csock_ICMPBase, id)"
    Py_ssize_t ICMP_SEQ "offsetof(struct csock_ICMPBase, seq)"

cdef Py_ssize_t _icmp_slots[5]
_icmp_slots[:] = [ICMP_TYPE, ICMP_CODE, ICMP_CHKSUM, ICMP_ID, ICMP_SEQ]
install_members(_ICMPBase, _ICMPBase._field_names, _icmp_slots, True)


@cython.final
@cython.no_gc
cdef public class ICMP(_ICMPBase) [object csock_ICMP, type csock_ICMP_Type]:
    """An ICMP message header. Defaults as scapy's: type 8 (echo request), code 0, id 0,
    seq 0; chksum None (computed by bytes()).

    Attributes
    ----------
    type : int
        Message type.
    code : int
        Message code.
    chksum : int or None
        Checksum; None: computed (ICMPv6: with the IPv6 pseudo-header).
    id : int
        Echo identifier.
    seq : int
        Echo sequence number.
    """
    _first = "icmp"
    _rules = {"type": ("ICMP.type", 0xFF, False), "code": ("ICMP.code", 0xFF, False),
              "chksum": ("ICMP.chksum", 0xFFFF, True), "id": ("ICMP.id", 0xFFFF, False),
              "seq": ("ICMP.seq", 0xFFFF, False)}

    def __cinit__(self):
        self._kind = K_ICMP             # (here, not in __init__: ICMP.__new__(ICMP) is an ICMP)

    def __init__(self, type=8, code=0, chksum=None, id=0, seq=0):
        self.init_fields(type, code, id, seq, chksum, "ICMP")

    cdef Layer clone(self):
        cdef ICMP c = ICMP.__new__(ICMP)
        self.copy_icmp(c)
        return c


@cython.final
@cython.no_gc
cdef public class ICMPv6(_ICMPBase) [object csock_ICMPv6, type csock_ICMPv6_Type]:
    """An ICMPv6 message header. Defaults: type 128 (echo request), code 0, id 0, seq 0;
    chksum None (computed by bytes() with the IPv6 pseudo-header).

    Attributes
    ----------
    type : int
        Message type.
    code : int
        Message code.
    chksum : int or None
        Checksum; None: computed (ICMPv6: with the IPv6 pseudo-header).
    id : int
        Echo identifier.
    seq : int
        Echo sequence number.
    """
    _first = "icmpv6"
    _rules = {"type": ("ICMPv6.type", 0xFF, False), "code": ("ICMPv6.code", 0xFF, False),
              "chksum": ("ICMPv6.chksum", 0xFFFF, True), "id": ("ICMPv6.id", 0xFFFF, False),
              "seq": ("ICMPv6.seq", 0xFFFF, False)}

    def __cinit__(self):
        self._kind = K_ICMPV6

    def __init__(self, type=128, code=0, chksum=None, id=0, seq=0):
        self.init_fields(type, code, id, seq, chksum, "ICMPv6")

    cdef Layer clone(self):
        cdef ICMPv6 c = ICMPv6.__new__(ICMPv6)
        self.copy_icmp(c)
        return c


cdef _ICMPBase parse_icmp(object owner, const uint8_t *base, Py_ssize_t off, Py_ssize_t end,
                          int kind):
    cdef const uint8_t *p = base + off
    cdef Py_ssize_t n = end - off
    cdef _ICMPBase m
    if n < ICMP_HEADER:
        raise PacketError(f"{'ICMP' if kind == K_ICMP else 'ICMPv6'} header needs 8 bytes, got {n}")
    if kind == K_ICMP:
        m = ICMP.__new__(ICMP)
    else:
        m = ICMPv6.__new__(ICMPv6)
    m._kind = kind
    m._clean = True
    m._owner = owner
    m._off = off
    m._end = end
    m.type = small_int(p[0])
    m.code = small_int(p[1])
    m.chksum = small_int(load_be16(p + 2))
    m.id = small_int(load_be16(p + 4))
    m.seq = small_int(load_be16(p + 6))
    set_lazy(m, owner, off + ICMP_HEADER, end)
    return m


use_generic_getattr(ICMP)
use_generic_getattr(ICMPv6)
cache_instances(<PyTypeObject *>ICMP)     # @cython.freelist would not apply to a subclass
cache_instances(<PyTypeObject *>ICMPv6)
