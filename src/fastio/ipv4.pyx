# IPv4 (RFC 791): version/IHL, TOS, total length, identification, flags/fragment offset,
# TTL, protocol, header checksum, source, destination, options (IHL * 4 - 20 bytes).
#
#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  |Version|  IHL  |Type of Service|          Total Length         |
#  |         Identification        |Flags|      Fragment Offset    |
#  |  Time to Live |    Protocol   |         Header Checksum       |
#  |                       Source Address                          |
#  |                    Destination Address                        |
#  |                    Options (padded to 4 bytes)                |

cdef enum:
    IPV4_HEADER = 20
    IPV4_MAX_OPTIONS = 40


@cython.final
@cython.no_gc
cdef class IPv4(Layer):
    """An IPv4 header. Defaults as scapy's IP: version 4, ttl 64, id 1, src 0.0.0.0,
    dst 127.0.0.1; ihl, len, proto and chksum None (computed by bytes())."""
    cdef int _version, _ihl, _tos, _len, _id, _flags, _frag, _ttl, _proto, _chksum
    cdef uint8_t _src[4]
    cdef uint8_t _dst[4]
    cdef object _src_s, _dst_s       # the address strings, made on first access
    cdef bytes _options

    _field_names = ("version", "ihl", "tos", "len", "id", "flags", "frag", "ttl", "proto",
                    "chksum", "src", "dst", "options")
    _first = "ipv4"

    def __init__(self, version=4, ihl=None, tos=0, len=None, id=1, flags=0, frag=0, ttl=64,
                 proto=None, chksum=None, src="0.0.0.0", dst="127.0.0.1", options=None):
        self._kind = K_IPV4
        self._version = 4 if version == 4 and type(version) is int else field_int(version, 15, "IPv4.version")
        self._ihl = opt_int(ihl, 15, "IPv4.ihl")
        self._tos = 0 if tos is 0 else field_int(tos, 0xFF, "IPv4.tos")
        self._len = opt_int(len, 0xFFFF, "IPv4.len")
        self._id = field_int(id, 0xFFFF, "IPv4.id")
        self._flags = 0 if flags is 0 else ipv4_flags(flags)
        self._frag = 0 if frag is 0 else field_int(frag, 0x1FFF, "IPv4.frag")
        self._ttl = 64 if ttl is 64 else field_int(ttl, 0xFF, "IPv4.ttl")
        self._proto = opt_int(proto, 0xFF, "IPv4.proto")
        self._chksum = opt_int(chksum, 0xFFFF, "IPv4.chksum")
        set_address(self._src, src, AF_INET, "IPv4.src")
        self._src_s = src if type(src) is str else None
        set_address(self._dst, dst, AF_INET, "IPv4.dst")
        self._dst_s = dst if type(dst) is str else None
        self._options = EMPTY if options is None else field_options(options, "IPv4.options", IPV4_MAX_OPTIONS)

    def __getattribute__(self, name):
        if name is N_SRC:
            if self._src_s is None:
                self._src_s = address_str(self._src, AF_INET)
            return self._src_s
        if name is N_DST:
            if self._dst_s is None:
                self._dst_s = address_str(self._dst, AF_INET)
            return self._dst_s
        if name is N_PAYLOAD:
            pl = self.get_payload()
            return EMPTY if pl is None else pl
        if name is N_TTL:
            return self._ttl
        if name is N_PROTO:
            return opt_get(self._proto)
        if name is N_LEN:
            return opt_get(self._len)
        if name is N_ID:
            return self._id
        if name is N_CHKSUM:
            return opt_get(self._chksum)
        if name is N_VERSION:
            return self._version
        if name is N_IHL:
            return opt_get(self._ihl)
        if name is N_TOS:
            return self._tos
        if name is N_FLAGS:
            return self._flags
        if name is N_FRAG:
            return self._frag
        return PyObject_GenericGetAttr(self, name)

    cdef Py_ssize_t header_len(self) except -1:
        if self._options is None:       # made with IPv4.__new__ and never initialised
            self._options = EMPTY
        return IPV4_HEADER + (PyBytes_GET_SIZE(self._options) + 3) // 4 * 4

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        cdef Py_ssize_t nopt = PyBytes_GET_SIZE(self._options)
        cdef Py_ssize_t hlen = self._hlen
        if self._len < 0 and self._size > 0xFFFF:
            raise PacketError(f"IPv4 packet of {self._size} bytes is longer than 65535")
        p[0] = <uint8_t>((self._version << 4) | ((self._ihl if self._ihl >= 0 else hlen >> 2) & 0xF))
        p[1] = <uint8_t>self._tos
        store_be16(p + 2, <uint16_t>(self._len if self._len >= 0 else self._size))
        store_be16(p + 4, <uint16_t>self._id)
        store_be16(p + 6, <uint16_t>((self._flags << 13) | self._frag))
        p[8] = <uint8_t>self._ttl
        p[9] = <uint8_t>(self._proto if self._proto >= 0 else proto_of(self._payload, False))
        p[10] = 0
        p[11] = 0
        memcpy(p + 12, self._src, 4)
        memcpy(p + 16, self._dst, 4)
        if nopt:
            memcpy(p + IPV4_HEADER, PyBytes_AS_STRING(self._options), nopt)
            memset(p + IPV4_HEADER + nopt, 0, hlen - IPV4_HEADER - nopt)
        if self._chksum >= 0:
            store_be16(p + 10, <uint16_t>self._chksum)
        else:
            store_be16(p + 10, csum_finish(csum_add(0, p, hlen)))
        return 0

    cdef int check(self, const uint8_t *p, Layer ip) except -1:
        cdef uint16_t stored = load_be16(p + 10)
        cdef uint8_t header[60]
        memcpy(header, p, self._hlen)
        header[10] = 0
        header[11] = 0
        cdef uint16_t good = csum_finish(csum_add(0, header, self._hlen))
        if stored != good:
            checksum_error("IPv4", stored, good)
        return 0

    cdef uint64_t pseudo(self, int proto, Py_ssize_t length) except? 0xFFFFFFFFFFFFFFFF:
        return pseudo_v4(self._src, self._dst, proto, length)

    cdef Layer clone(self):
        cdef IPv4 c = IPv4.__new__(IPv4)
        self.copy_base(c)
        c._version = self._version
        c._ihl = self._ihl
        c._tos = self._tos
        c._len = self._len
        c._id = self._id
        c._flags = self._flags
        c._frag = self._frag
        c._ttl = self._ttl
        c._proto = self._proto
        c._chksum = self._chksum
        memcpy(c._src, self._src, 4)
        memcpy(c._dst, self._dst, 4)
        c._src_s = self._src_s
        c._dst_s = self._dst_s
        c._options = self._options
        return c

    cdef tuple values(self):
        return (self._version, opt_get(self._ihl), self._tos, opt_get(self._len), self._id,
                self._flags, self._frag, self._ttl, opt_get(self._proto), opt_get(self._chksum),
                self.src, self.dst, self._options)

    @property
    def version(self):
        return self._version

    @version.setter
    def version(self, value):
        self._version = field_int(value, 15, "IPv4.version")
        self._clean = False

    @property
    def ihl(self):
        return opt_get(self._ihl)

    @ihl.setter
    def ihl(self, value):
        self._ihl = opt_int(value, 15, "IPv4.ihl")
        self._clean = False

    @property
    def tos(self):
        return self._tos

    @tos.setter
    def tos(self, value):
        self._tos = field_int(value, 0xFF, "IPv4.tos")
        self._clean = False

    @property
    def len(self):
        return opt_get(self._len)

    @len.setter
    def len(self, value):
        self._len = opt_int(value, 0xFFFF, "IPv4.len")
        self._clean = False

    @property
    def id(self):
        return self._id

    @id.setter
    def id(self, value):
        self._id = field_int(value, 0xFFFF, "IPv4.id")
        self._clean = False

    @property
    def frag(self):
        return self._frag

    @frag.setter
    def frag(self, value):
        self._frag = field_int(value, 0x1FFF, "IPv4.frag")
        self._clean = False

    @property
    def ttl(self):
        return self._ttl

    @ttl.setter
    def ttl(self, value):
        self._ttl = field_int(value, 0xFF, "IPv4.ttl")
        self._clean = False

    @property
    def proto(self):
        return opt_get(self._proto)

    @proto.setter
    def proto(self, value):
        self._proto = opt_int(value, 0xFF, "IPv4.proto")
        self._clean = False

    @property
    def chksum(self):
        return opt_get(self._chksum)

    @chksum.setter
    def chksum(self, value):
        self._chksum = opt_int(value, 0xFFFF, "IPv4.chksum")
        self._clean = False
    @property
    def flags(self):
        return self._flags

    @flags.setter
    def flags(self, value):
        self._flags = ipv4_flags(value)
        self._clean = False

    @property
    def src(self):
        if self._src_s is None:
            self._src_s = address_str(self._src, AF_INET)
        return self._src_s

    @src.setter
    def src(self, value):
        set_address(self._src, value, AF_INET, "IPv4.src")
        self._src_s = value if type(value) is str else None
        self._clean = False

    @property
    def dst(self):
        if self._dst_s is None:
            self._dst_s = address_str(self._dst, AF_INET)
        return self._dst_s

    @dst.setter
    def dst(self, value):
        set_address(self._dst, value, AF_INET, "IPv4.dst")
        self._dst_s = value if type(value) is str else None
        self._clean = False

    @property
    def options(self):
        return self._options

    @options.setter
    def options(self, value):
        self._options = field_options(value, "IPv4.options", IPV4_MAX_OPTIONS)
        self._clean = False


cdef int ipv4_flags(object value) except -1:
    """IPv4 flags: an int 0..7 or scapy's names ("DF", "MF", "evil", "MF+DF")."""
    cdef int v = 0
    if isinstance(value, str):
        for name in value.replace("|", "+").split("+"):
            name = name.strip()
            if name == "MF":
                v |= 1
            elif name == "DF":
                v |= 2
            elif name == "evil":
                v |= 4
            elif name:
                raise ValueError(f"IPv4.flags: unknown flag {name!r} (MF, DF, evil)")
        return v
    return field_int(value, 7, "IPv4.flags")


cdef IPv4 parse_ipv4(object owner, const uint8_t *base, Py_ssize_t off, Py_ssize_t end, int depth):
    cdef const uint8_t *p = base + off
    cdef Py_ssize_t n = end - off
    cdef Py_ssize_t hlen, total
    cdef IPv4 ip
    cdef uint16_t fragword
    if n < IPV4_HEADER:
        raise PacketError(f"IPv4 header needs 20 bytes, got {n}")
    if (p[0] >> 4) != 4:
        raise PacketError(f"IPv4 version field is {p[0] >> 4}, not 4")
    hlen = (p[0] & 0xF) * 4
    if hlen < IPV4_HEADER:
        raise PacketError(f"IPv4 IHL is {p[0] & 0xF}, less than 5")
    if hlen > n:
        raise PacketError(f"IPv4 header of {hlen} bytes is longer than the {n} bytes given")
    total = load_be16(p + 2)
    if total < hlen:
        raise PacketError(f"IPv4 total length {total} is less than the header ({hlen} bytes)")
    if total > n:
        raise PacketError(f"IPv4 total length {total} is beyond the {n} bytes given")
    ip = IPv4.__new__(IPv4)
    ip._kind = K_IPV4
    ip._clean = True
    ip._owner = owner
    ip._off = off
    ip._end = end
    ip._version = 4
    ip._ihl = p[0] & 0xF
    ip._tos = p[1]
    ip._len = total
    ip._id = load_be16(p + 4)
    fragword = load_be16(p + 6)
    ip._flags = fragword >> 13
    ip._frag = fragword & 0x1FFF
    ip._ttl = p[8]
    ip._proto = p[9]
    ip._chksum = load_be16(p + 10)
    memcpy(ip._src, p + 12, 4)
    memcpy(ip._dst, p + 16, 4)
    ip._options = EMPTY if hlen == IPV4_HEADER else PyBytes_FromStringAndSize(<const char *>p + IPV4_HEADER, hlen - IPV4_HEADER)
    if total < n:
        ip._trailer = PyBytes_FromStringAndSize(<const char *>p + total, n - total)
    if (fragword & 0x3FFF) != 0:
        # a fragment (more to come or not the first): the upper header may not be whole
        set_lazy(ip, owner, off + hlen, off + total)
    else:
        parse_upper(ip, p[9], owner, base, off + hlen, off + total, depth)
    return ip
