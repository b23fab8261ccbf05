# ICMP (RFC 792) and ICMPv6 (RFC 4443): type, code, checksum, then 4 "rest of header" bytes
# read as identifier and sequence number (their meaning for echo request/reply; for other
# types they are just those 4 bytes). The ICMP checksum covers the ICMP message; the ICMPv6
# checksum also covers the IPv6 pseudo-header (next header 58).
#
#   0      7 8     15 16    23 24    31
#  |  Type  |  Code  |     Checksum     |
#  |   Identifier    |  Sequence Number |

cdef enum:
    ICMP_HEADER = 8


cdef class _ICMPBase(Layer):
    cdef int _type, _code, _chksum, _id, _seq

    _field_names = ("type", "code", "chksum", "id", "seq")

    cdef int init_fields(self, object type, object code, object id, object seq,
                         object chksum, str name) except -1:
        self._type = field_int(type, 0xFF, name + ".type")
        self._code = 0 if code is 0 else field_int(code, 0xFF, name + ".code")
        self._chksum = opt_int(chksum, 0xFFFF, name + ".chksum")
        self._id = 0 if id is 0 else field_int(id, 0xFFFF, name + ".id")
        self._seq = 0 if seq is 0 else field_int(seq, 0xFFFF, name + ".seq")
        return 0

    def __getattribute__(self, name):
        if name is N_TYPE:
            return self._type
        if name is N_CODE:
            return self._code
        if name is N_ID:
            return self._id
        if name is N_SEQ:
            return self._seq
        if name is N_CHKSUM:
            return opt_get(self._chksum)
        if name is N_PAYLOAD:
            pl = self.get_payload()
            return EMPTY if pl is None else pl
        return PyObject_GenericGetAttr(self, name)

    cdef Py_ssize_t header_len(self) except -1:
        return ICMP_HEADER

    cdef uint64_t start_sum(self, Layer ip) except? 0xFFFFFFFFFFFFFFFF:
        if self._kind == K_ICMPV6 and ip is not None:
            return ip.pseudo(PROTO_ICMPV6, self._size)
        return 0

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        p[0] = <uint8_t>self._type
        p[1] = <uint8_t>self._code
        store_be16(p + 4, <uint16_t>self._id)
        store_be16(p + 6, <uint16_t>self._seq)
        if self._chksum >= 0:
            store_be16(p + 2, <uint16_t>self._chksum)
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
        c._type = self._type
        c._code = self._code
        c._chksum = self._chksum
        c._id = self._id
        c._seq = self._seq
        return 0

    cdef tuple values(self):
        return (self._type, self._code, opt_get(self._chksum), self._id, self._seq)

    @property
    def type(self):
        return self._type

    @type.setter
    def type(self, value):
        self._type = field_int(value, 0xFF, type(self).__name__ + ".type")
        self._clean = False

    @property
    def code(self):
        return self._code

    @code.setter
    def code(self, value):
        self._code = field_int(value, 0xFF, type(self).__name__ + ".code")
        self._clean = False

    @property
    def chksum(self):
        return opt_get(self._chksum)

    @chksum.setter
    def chksum(self, value):
        self._chksum = opt_int(value, 0xFFFF, type(self).__name__ + ".chksum")
        self._clean = False

    @property
    def id(self):
        return self._id

    @id.setter
    def id(self, value):
        self._id = field_int(value, 0xFFFF, type(self).__name__ + ".id")
        self._clean = False

    @property
    def seq(self):
        return self._seq

    @seq.setter
    def seq(self, value):
        self._seq = field_int(value, 0xFFFF, type(self).__name__ + ".seq")
        self._clean = False

@cython.final
@cython.no_gc
cdef class ICMP(_ICMPBase):
    """An ICMP message header. Defaults as scapy's: type 8 (echo request), code 0, id 0,
    seq 0; chksum None (computed by bytes())."""
    _first = "icmp"

    def __init__(self, type=8, code=0, chksum=None, id=0, seq=0):
        self._kind = K_ICMP
        self.init_fields(type, code, id, seq, chksum, "ICMP")

    cdef Layer clone(self):
        cdef ICMP c = ICMP.__new__(ICMP)
        self.copy_icmp(c)
        return c


@cython.final
@cython.no_gc
cdef class ICMPv6(_ICMPBase):
    """An ICMPv6 message header. Defaults: type 128 (echo request), code 0, id 0, seq 0;
    chksum None (computed by bytes() with the IPv6 pseudo-header)."""
    _first = "icmpv6"

    def __init__(self, type=128, code=0, chksum=None, id=0, seq=0):
        self._kind = K_ICMPV6
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
    m._type = p[0]
    m._code = p[1]
    m._chksum = load_be16(p + 2)
    m._id = load_be16(p + 4)
    m._seq = load_be16(p + 6)
    m._lazy = True
    m._pl_off = off + ICMP_HEADER
    m._pl_end = end
    return m
