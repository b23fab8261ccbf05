# TCP (RFC 9293): ports, sequence and acknowledgment numbers, data offset (header length in
# 32-bit words), reserved bits, flags, window, checksum (pseudo-header + segment), urgent
# pointer, options (data offset * 4 - 20 bytes).
#
#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  |          Source Port          |       Destination Port        |
#  |                        Sequence Number                        |
#  |                    Acknowledgment Number                      |
#  |  Data |     |N|C|E|U|A|P|R|S|F|                               |
#  | Offset| Rsv |S|W|C|R|C|S|S|Y|I|            Window             |
#  |           Checksum            |         Urgent Pointer        |
#  |                    Options (padded to 4 bytes)                |
#
# Field layout as scapy's: reserved is 3 bits, flags 9 bits (F S R P A U E C N = 0x001..0x100).

cdef enum:
    TCP_HEADER = 20
    TCP_MAX_OPTIONS = 40


@cython.final
@cython.no_gc
cdef class TCP(Layer):
    """A TCP header. Defaults as scapy's: sport 20, dport 80, flags S (0x02), window 8192;
    dataofs and chksum None (computed by bytes()). flags also takes scapy's letters ("SA")."""
    cdef int _sport, _dport, _dataofs, _reserved, _flags, _window, _chksum, _urgptr
    cdef uint32_t _seq, _ack
    cdef bytes _options

    _field_names = ("sport", "dport", "seq", "ack", "dataofs", "reserved", "flags", "window",
                    "chksum", "urgptr", "options")
    _first = "tcp"

    def __init__(self, sport=20, dport=80, seq=0, ack=0, dataofs=None, reserved=0, flags=2,
                 window=8192, chksum=None, urgptr=0, options=None):
        self._kind = K_TCP
        self._sport = field_int(sport, 0xFFFF, "TCP.sport")
        self._dport = field_int(dport, 0xFFFF, "TCP.dport")
        self._seq = 0 if seq is 0 else field_u32(seq, "TCP.seq")
        self._ack = 0 if ack is 0 else field_u32(ack, "TCP.ack")
        self._dataofs = opt_int(dataofs, 15, "TCP.dataofs")
        self._reserved = 0 if reserved is 0 else field_int(reserved, 7, "TCP.reserved")
        self._flags = tcp_flags(flags)
        self._window = field_int(window, 0xFFFF, "TCP.window")
        self._chksum = opt_int(chksum, 0xFFFF, "TCP.chksum")
        self._urgptr = 0 if urgptr is 0 else field_int(urgptr, 0xFFFF, "TCP.urgptr")
        self._options = EMPTY if options is None else field_options(options, "TCP.options", TCP_MAX_OPTIONS)

    def __getattribute__(self, name):
        if name is N_SPORT:
            return self._sport
        if name is N_DPORT:
            return self._dport
        if name is N_PAYLOAD:
            pl = self.get_payload()
            return EMPTY if pl is None else pl
        if name is N_SEQ:
            return self._seq
        if name is N_ACK:
            return self._ack
        if name is N_FLAGS:
            return self._flags
        if name is N_WINDOW:
            return self._window
        if name is N_CHKSUM:
            return opt_get(self._chksum)
        return PyObject_GenericGetAttr(self, name)

    cdef Py_ssize_t header_len(self) except -1:
        if self._options is None:       # made with TCP.__new__ and never initialised
            self._options = EMPTY
        return TCP_HEADER + (PyBytes_GET_SIZE(self._options) + 3) // 4 * 4

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        cdef Py_ssize_t nopt = PyBytes_GET_SIZE(self._options)
        cdef Py_ssize_t hlen = self._hlen
        cdef int dataofs = self._dataofs if self._dataofs >= 0 else hlen >> 2
        store_be16(p, <uint16_t>self._sport)
        store_be16(p + 2, <uint16_t>self._dport)
        store_be32(p + 4, self._seq)
        store_be32(p + 8, self._ack)
        p[12] = <uint8_t>((dataofs << 4) | (self._reserved << 1) | ((self._flags >> 8) & 1))
        p[13] = <uint8_t>(self._flags & 0xFF)
        store_be16(p + 14, <uint16_t>self._window)
        p[16] = 0
        p[17] = 0
        store_be16(p + 18, <uint16_t>self._urgptr)
        if nopt:
            memcpy(p + TCP_HEADER, PyBytes_AS_STRING(self._options), nopt)
            memset(p + TCP_HEADER + nopt, 0, hlen - TCP_HEADER - nopt)
        if self._chksum >= 0:
            store_be16(p + 16, <uint16_t>self._chksum)
        elif ip is not None:
            store_be16(p + 16, csum_finish(csum_add(ip.pseudo(PROTO_TCP, self._size), p, self._size)))
        return 0

    cdef int check(self, const uint8_t *p, Layer ip) except -1:
        cdef uint16_t stored = load_be16(p + 16)
        cdef uint64_t acc
        if ip is None:
            return 0
        if csum_finish(csum_add(ip.pseudo(PROTO_TCP, self._size), p, self._size)) != 0:
            acc = csum_add(ip.pseudo(PROTO_TCP, self._size), p, 16)
            acc = csum_add(acc, p + 18, self._size - 18)
            checksum_error("TCP", stored, csum_finish(acc))
        return 0

    cdef Layer clone(self):
        cdef TCP c = TCP.__new__(TCP)
        self.copy_base(c)
        c._sport = self._sport
        c._dport = self._dport
        c._seq = self._seq
        c._ack = self._ack
        c._dataofs = self._dataofs
        c._reserved = self._reserved
        c._flags = self._flags
        c._window = self._window
        c._chksum = self._chksum
        c._urgptr = self._urgptr
        c._options = self._options
        return c

    cdef tuple values(self):
        return (self._sport, self._dport, self._seq, self._ack, opt_get(self._dataofs),
                self._reserved, self._flags, self._window, opt_get(self._chksum), self._urgptr,
                self._options)

    @property
    def sport(self):
        return self._sport

    @sport.setter
    def sport(self, value):
        self._sport = field_int(value, 0xFFFF, "TCP.sport")
        self._clean = False

    @property
    def dport(self):
        return self._dport

    @dport.setter
    def dport(self, value):
        self._dport = field_int(value, 0xFFFF, "TCP.dport")
        self._clean = False

    @property
    def dataofs(self):
        return opt_get(self._dataofs)

    @dataofs.setter
    def dataofs(self, value):
        self._dataofs = opt_int(value, 15, "TCP.dataofs")
        self._clean = False

    @property
    def reserved(self):
        return self._reserved

    @reserved.setter
    def reserved(self, value):
        self._reserved = field_int(value, 7, "TCP.reserved")
        self._clean = False

    @property
    def window(self):
        return self._window

    @window.setter
    def window(self, value):
        self._window = field_int(value, 0xFFFF, "TCP.window")
        self._clean = False

    @property
    def chksum(self):
        return opt_get(self._chksum)

    @chksum.setter
    def chksum(self, value):
        self._chksum = opt_int(value, 0xFFFF, "TCP.chksum")
        self._clean = False

    @property
    def urgptr(self):
        return self._urgptr

    @urgptr.setter
    def urgptr(self, value):
        self._urgptr = field_int(value, 0xFFFF, "TCP.urgptr")
        self._clean = False
    @property
    def seq(self):
        return self._seq

    @seq.setter
    def seq(self, value):
        self._seq = field_u32(value, "TCP.seq")
        self._clean = False

    @property
    def ack(self):
        return self._ack

    @ack.setter
    def ack(self, value):
        self._ack = field_u32(value, "TCP.ack")
        self._clean = False

    @property
    def flags(self):
        return self._flags

    @flags.setter
    def flags(self, value):
        self._flags = tcp_flags(value)
        self._clean = False

    @property
    def options(self):
        return self._options

    @options.setter
    def options(self, value):
        self._options = field_options(value, "TCP.options", TCP_MAX_OPTIONS)
        self._clean = False


cdef uint32_t field_u32(object value, str name) except? 0xFFFFFFFF:
    if not PyLong_CheckExact(value):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or value > 0xFFFFFFFF:
        raise ValueError(f"{name} must be between 0 and 4294967295, got {value!r}")
    return <uint32_t>value


cdef int tcp_flags(object value) except -1:
    """TCP flags: an int 0..0x1FF or scapy's letters, e.g. "SA" (FSRPAUECN)."""
    cdef int v = 0
    if type(value) is int and 0 <= value <= 0x1FF:
        return value
    if isinstance(value, str):
        for ch in value:
            i = "FSRPAUECN".find(ch)
            if i < 0:
                raise ValueError(f"TCP.flags: unknown flag {ch!r} (letters of FSRPAUECN)")
            v |= 1 << i
        return v
    return field_int(value, 0x1FF, "TCP.flags")


cdef TCP parse_tcp(object owner, const uint8_t *base, Py_ssize_t off, Py_ssize_t end):
    cdef const uint8_t *p = base + off
    cdef Py_ssize_t n = end - off
    cdef Py_ssize_t hlen
    cdef TCP t
    if n < TCP_HEADER:
        raise PacketError(f"TCP header needs 20 bytes, got {n}")
    hlen = (p[12] >> 4) * 4
    if hlen < TCP_HEADER:
        raise PacketError(f"TCP data offset is {p[12] >> 4}, less than 5")
    if hlen > n:
        raise PacketError(f"TCP header of {hlen} bytes is longer than the {n} bytes given")
    t = TCP.__new__(TCP)
    t._kind = K_TCP
    t._clean = True
    t._owner = owner
    t._off = off
    t._end = end
    t._sport = load_be16(p)
    t._dport = load_be16(p + 2)
    t._seq = load_be32(p + 4)
    t._ack = load_be32(p + 8)
    t._dataofs = p[12] >> 4
    t._reserved = (p[12] >> 1) & 7
    t._flags = ((p[12] & 1) << 8) | p[13]
    t._window = load_be16(p + 14)
    t._chksum = load_be16(p + 16)
    t._urgptr = load_be16(p + 18)
    t._options = EMPTY if hlen == TCP_HEADER else PyBytes_FromStringAndSize(<const char *>p + TCP_HEADER, hlen - TCP_HEADER)
    t._lazy = True
    t._pl_off = off + hlen
    t._pl_end = end
    return t
