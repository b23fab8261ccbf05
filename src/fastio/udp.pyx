# UDP (RFC 768): source port, destination port, length (header + data), checksum over the
# IP pseudo-header, the header and the data. A computed checksum of 0 is sent as 0xFFFF
# (0 means "no checksum", allowed over IPv4 only).
#
#   0      7 8     15 16    23 24    31
#  |   Source Port   | Destination Port |
#  |     Length      |     Checksum     |

cdef enum:
    UDP_HEADER = 8


@cython.final
@cython.no_gc
cdef class UDP(Layer):
    """A UDP header. Defaults as scapy's: sport 53, dport 53; len and chksum None (computed
    by bytes(), the checksum with the enclosing IP layer's pseudo-header)."""
    cdef int _sport, _dport, _len, _chksum

    _field_names = ("sport", "dport", "len", "chksum")
    _first = "udp"

    def __init__(self, sport=53, dport=53, len=None, chksum=None):
        self._kind = K_UDP
        self._sport = field_int(sport, 0xFFFF, "UDP.sport")
        self._dport = field_int(dport, 0xFFFF, "UDP.dport")
        self._len = -1 if len is None else field_int(len, 0xFFFF, "UDP.len")
        self._chksum = -1 if chksum is None else field_int(chksum, 0xFFFF, "UDP.chksum")

    def __getattribute__(self, name):
        if name is N_SPORT:
            return self._sport
        if name is N_DPORT:
            return self._dport
        if name is N_PAYLOAD:
            pl = self.get_payload()
            return EMPTY if pl is None else pl
        if name is N_LEN:
            return opt_get(self._len)
        if name is N_CHKSUM:
            return opt_get(self._chksum)
        return PyObject_GenericGetAttr(self, name)

    cdef Py_ssize_t header_len(self) except -1:
        return UDP_HEADER

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        cdef uint16_t ck
        if self._len < 0 and self._size > 0xFFFF:
            raise PacketError(f"UDP datagram of {self._size} bytes is longer than 65535")
        store_be16(p, <uint16_t>self._sport)
        store_be16(p + 2, <uint16_t>self._dport)
        store_be16(p + 4, <uint16_t>(self._len if self._len >= 0 else self._size))
        if self._chksum >= 0:
            store_be16(p + 6, <uint16_t>self._chksum)
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
        c._sport = self._sport
        c._dport = self._dport
        c._len = self._len
        c._chksum = self._chksum
        return c

    cdef tuple values(self):
        return (self._sport, self._dport, opt_get(self._len), opt_get(self._chksum))

    @property
    def sport(self):
        return self._sport

    @sport.setter
    def sport(self, value):
        self._sport = field_int(value, 0xFFFF, "UDP.sport")
        self._clean = False

    @property
    def dport(self):
        return self._dport

    @dport.setter
    def dport(self, value):
        self._dport = field_int(value, 0xFFFF, "UDP.dport")
        self._clean = False

    @property
    def len(self):
        return opt_get(self._len)

    @len.setter
    def len(self, value):
        self._len = opt_int(value, 0xFFFF, "UDP.len")
        self._clean = False

    @property
    def chksum(self):
        return opt_get(self._chksum)

    @chksum.setter
    def chksum(self, value):
        self._chksum = opt_int(value, 0xFFFF, "UDP.chksum")
        self._clean = False

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
    u._kind = K_UDP
    u._clean = True
    u._owner = owner
    u._off = off
    u._end = end
    u._sport = load_be16(p)
    u._dport = load_be16(p + 2)
    u._len = length
    u._chksum = load_be16(p + 6)
    if length < n:
        u._trailer = PyBytes_FromStringAndSize(<const char *>p + length, n - length)
    u._lazy = True
    u._pl_off = off + UDP_HEADER
    u._pl_end = off + length
    return u
