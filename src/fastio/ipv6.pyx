# IPv6 (RFC 8200): version, traffic class, flow label, payload length, next header, hop
# limit, source, destination (40 bytes), then extension headers and the upper layer.
#
#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  |Version| Traffic Class |           Flow Label                  |
#  |         Payload Length        |  Next Header  |   Hop Limit   |
#  |                  Source Address (16 bytes)                    |
#  |               Destination Address (16 bytes)                  |
#
# Extension headers (hop-by-hop 0, routing 43, fragment 44, destination options 60,
# authentication 51) are skipped when parsing to find the upper layer; their bytes are kept
# in the layer (``ext``) so that bytes() gives the input back. ``nh`` is the header's own
# next-header field (the first extension header when there are any).

cdef enum:
    IPV6_HEADER = 40


@cython.final
@cython.no_gc
cdef class IPv6(Layer):
    """An IPv6 header. Defaults as scapy's IPv6: hlim 64, src ::, dst ::1; plen and nh None
    (computed by bytes()). ``ext`` holds raw extension headers (nh must then be given)."""
    cdef int _version, _tc, _fl, _plen, _nh, _hlim
    cdef uint8_t _src[16]
    cdef uint8_t _dst[16]
    cdef object _src_s, _dst_s
    cdef bytes _ext

    _field_names = ("version", "tc", "fl", "plen", "nh", "hlim", "src", "dst", "ext")
    _first = "ipv6"

    def __init__(self, version=6, tc=0, fl=0, plen=None, nh=None, hlim=64, src="::",
                 dst="::1", ext=None):
        self._kind = K_IPV6
        self._version = 6 if version == 6 and type(version) is int else field_int(version, 15, "IPv6.version")
        self._tc = 0 if tc is 0 else field_int(tc, 0xFF, "IPv6.tc")
        self._fl = 0 if fl is 0 else field_int(fl, 0xFFFFF, "IPv6.fl")
        self._plen = opt_int(plen, 0xFFFF, "IPv6.plen")
        self._nh = opt_int(nh, 0xFF, "IPv6.nh")
        self._hlim = 64 if hlim is 64 else field_int(hlim, 0xFF, "IPv6.hlim")
        set_address(self._src, src, AF_INET6, "IPv6.src")
        self._src_s = None           # made on first read: the canonical form
        set_address(self._dst, dst, AF_INET6, "IPv6.dst")
        self._dst_s = None
        self._ext = EMPTY if ext is None else ipv6_ext(ext)

    def __getattribute__(self, name):
        if name is N_SRC:
            if self._src_s is None:
                self._src_s = address_str(self._src, AF_INET6)
            return self._src_s
        if name is N_DST:
            if self._dst_s is None:
                self._dst_s = address_str(self._dst, AF_INET6)
            return self._dst_s
        if name is N_PAYLOAD:
            pl = self.get_payload()
            return EMPTY if pl is None else pl
        if name is N_NH:
            return opt_get(self._nh)
        if name is N_PLEN:
            return opt_get(self._plen)
        if name is N_HLIM:
            return self._hlim
        return PyObject_GenericGetAttr(self, name)

    cdef Py_ssize_t header_len(self) except -1:
        if self._ext is None:           # made with IPv6.__new__ and never initialised
            self._ext = EMPTY
        return IPV6_HEADER + PyBytes_GET_SIZE(self._ext)

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        cdef Py_ssize_t plen = self._size - IPV6_HEADER
        cdef int nh = self._nh
        if self._plen < 0 and plen > 0xFFFF:
            raise PacketError(f"IPv6 payload of {plen} bytes is longer than 65535")
        if nh < 0:
            if PyBytes_GET_SIZE(self._ext):
                raise PacketError("IPv6.nh must be given when ext holds extension headers")
            nh = proto_of(self._payload, True)
        store_be32(p, (<uint32_t>self._version << 28) | (<uint32_t>self._tc << 20) | <uint32_t>self._fl)
        store_be16(p + 4, <uint16_t>(self._plen if self._plen >= 0 else plen))
        p[6] = <uint8_t>nh
        p[7] = <uint8_t>self._hlim
        memcpy(p + 8, self._src, 16)
        memcpy(p + 24, self._dst, 16)
        if PyBytes_GET_SIZE(self._ext):
            memcpy(p + IPV6_HEADER, PyBytes_AS_STRING(self._ext), PyBytes_GET_SIZE(self._ext))
        return 0

    cdef uint64_t pseudo(self, int proto, Py_ssize_t length) except? 0xFFFFFFFFFFFFFFFF:
        # RFC 8200 8.1: with a Routing header that still has segments left, the pseudo-header
        # holds the final destination (the last address of type 0/2, the first segment of a
        # type 4 segment routing header); at the final node it is the header's dst.
        cdef const uint8_t *final = self._dst
        cdef const uint8_t *e
        cdef Py_ssize_t n = PyBytes_GET_SIZE(self._ext) if self._ext is not None else 0
        cdef Py_ssize_t pos = 0, elen, count
        cdef int nh = self._nh
        while n and is_extension(nh) and pos + 8 <= n:
            e = <const uint8_t *>PyBytes_AS_STRING(self._ext) + pos
            elen = 8 if nh == PROTO_FRAGMENT else ((e[1] + 2) * 4 if nh == PROTO_AH else (e[1] + 1) * 8)
            if pos + elen > n:
                break
            if nh == PROTO_ROUTING and e[3] > 0:
                count = (elen - 8) // 16
                if (e[2] == 0 or e[2] == 2) and count > 0:
                    final = e + 8 + 16 * (count - 1)
                elif e[2] == 4 and count > 0:
                    final = e + 8
            nh = e[0]
            pos += elen
        return pseudo_v6(self._src, final, proto, length)

    cdef Layer clone(self):
        cdef IPv6 c = IPv6.__new__(IPv6)
        self.copy_base(c)
        c._version = self._version
        c._tc = self._tc
        c._fl = self._fl
        c._plen = self._plen
        c._nh = self._nh
        c._hlim = self._hlim
        memcpy(c._src, self._src, 16)
        memcpy(c._dst, self._dst, 16)
        c._src_s = self._src_s
        c._dst_s = self._dst_s
        c._ext = self._ext
        return c

    cdef tuple values(self):
        return (self._version, self._tc, self._fl, opt_get(self._plen), opt_get(self._nh),
                self._hlim, self.src, self.dst, self._ext)

    @property
    def version(self):
        return self._version

    @version.setter
    def version(self, value):
        self._version = field_int(value, 15, "IPv6.version")
        self._clean = False

    @property
    def tc(self):
        return self._tc

    @tc.setter
    def tc(self, value):
        self._tc = field_int(value, 0xFF, "IPv6.tc")
        self._clean = False

    @property
    def fl(self):
        return self._fl

    @fl.setter
    def fl(self, value):
        self._fl = field_int(value, 0xFFFFF, "IPv6.fl")
        self._clean = False

    @property
    def plen(self):
        return opt_get(self._plen)

    @plen.setter
    def plen(self, value):
        self._plen = opt_int(value, 0xFFFF, "IPv6.plen")
        self._clean = False

    @property
    def nh(self):
        return opt_get(self._nh)

    @nh.setter
    def nh(self, value):
        self._nh = opt_int(value, 0xFF, "IPv6.nh")
        self._clean = False

    @property
    def hlim(self):
        return self._hlim

    @hlim.setter
    def hlim(self, value):
        self._hlim = field_int(value, 0xFF, "IPv6.hlim")
        self._clean = False
    @property
    def src(self):
        if self._src_s is None:
            self._src_s = address_str(self._src, AF_INET6)
        return self._src_s

    @src.setter
    def src(self, value):
        set_address(self._src, value, AF_INET6, "IPv6.src")
        self._src_s = None
        self._clean = False

    @property
    def dst(self):
        if self._dst_s is None:
            self._dst_s = address_str(self._dst, AF_INET6)
        return self._dst_s

    @dst.setter
    def dst(self, value):
        set_address(self._dst, value, AF_INET6, "IPv6.dst")
        self._dst_s = None
        self._clean = False

    @property
    def ext(self):
        """The raw extension headers between this header and the upper layer."""
        return self._ext

    @ext.setter
    def ext(self, value):
        self._ext = EMPTY if value is None else ipv6_ext(value)
        self._clean = False


cdef bytes ipv6_ext(object value):
    cdef bytes b = field_options(value, "IPv6.ext", 0xFFFF)
    if PyBytes_GET_SIZE(b) % 8:
        raise ValueError(f"IPv6.ext must be a multiple of 8 bytes long, got {PyBytes_GET_SIZE(b)}")
    return b


cdef inline bint is_extension(int nh) noexcept:
    return (nh == PROTO_HOPOPT or nh == PROTO_ROUTING or nh == PROTO_FRAGMENT
            or nh == PROTO_DSTOPTS or nh == PROTO_AH)


cdef IPv6 parse_ipv6(object owner, const uint8_t *base, Py_ssize_t off, Py_ssize_t end, int depth):
    cdef const uint8_t *p = base + off
    cdef Py_ssize_t n = end - off
    cdef Py_ssize_t total, pos, elen
    cdef int nh
    cdef bint whole = True
    cdef IPv6 ip
    cdef uint32_t word
    if n < IPV6_HEADER:
        raise PacketError(f"IPv6 header needs 40 bytes, got {n}")
    word = load_be32(p)
    if (word >> 28) != 6:
        raise PacketError(f"IPv6 version field is {word >> 28}, not 6")
    total = IPV6_HEADER + load_be16(p + 4)
    if total > n:
        raise PacketError(f"IPv6 payload length {total - IPV6_HEADER} is beyond the "
                          f"{n - IPV6_HEADER} bytes given")
    # walk the extension headers
    nh = p[6]
    pos = IPV6_HEADER
    while is_extension(nh):
        if pos + 8 > total:
            raise PacketError(f"IPv6 extension header {nh} truncated at byte {pos}")
        if nh == PROTO_FRAGMENT:
            elen = 8
            if (load_be16(p + pos + 2) & 0xFFF9) != 0:   # offset != 0 or more fragments
                whole = False
        elif nh == PROTO_AH:
            elen = (p[pos + 1] + 2) * 4
        else:
            elen = (p[pos + 1] + 1) * 8
        if pos + elen > total:
            raise PacketError(f"IPv6 extension header {nh} of {elen} bytes is beyond the "
                              f"payload length")
        nh = p[pos]
        pos += elen
        if not whole:
            break
    ip = IPv6.__new__(IPv6)
    ip._kind = K_IPV6
    ip._clean = True
    ip._owner = owner
    ip._off = off
    ip._end = end
    ip._version = 6
    ip._tc = (word >> 20) & 0xFF
    ip._fl = word & 0xFFFFF
    ip._plen = total - IPV6_HEADER
    ip._nh = p[6]
    ip._hlim = p[7]
    memcpy(ip._src, p + 8, 16)
    memcpy(ip._dst, p + 24, 16)
    ip._ext = EMPTY if pos == IPV6_HEADER else PyBytes_FromStringAndSize(<const char *>p + IPV6_HEADER, pos - IPV6_HEADER)
    if total < n:
        ip._trailer = PyBytes_FromStringAndSize(<const char *>p + total, n - total)
    if whole:
        parse_upper(ip, nh, owner, base, off + pos, off + total, depth)
    else:
        set_lazy(ip, owner, off + pos, off + total)
    return ip
