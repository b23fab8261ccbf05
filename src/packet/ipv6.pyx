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

cimport cython
from cpython.ref cimport PyObject
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.long cimport PyLong_FromUnsignedLong
from cpython.object cimport PyTypeObject
from includes.instancecache cimport cache_instances
from csock._fastio cimport install_members
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from includes.byteorder cimport load_be16, load_be32, store_be16, store_be32
from includes.socket cimport AF_INET6


cdef enum:
    IPV6_HEADER = 40


@cython.final
@cython.no_gc
cdef public class IPv6(Layer) [object csock_IPv6, type csock_IPv6_Type]:
    """An IPv6 header. Defaults as scapy's IPv6: hlim 64, src ::, dst ::1; plen and nh None
    (computed by bytes()). ``ext`` holds raw extension headers (nh must then be given).

    Attributes
    ----------
    version : int
        6.
    tc : int
        Traffic class (DSCP and ECN).
    fl : int
        Flow label.
    plen : int or None
        Payload length; None: computed.
    nh : int or None
        Next header; None: from the next layer.
    hlim : int
        Hop limit.
    src : str
        Source address.
    dst : str
        Destination address.
    ext : bytes or None
        Raw extension headers after the fixed header (nh names the first of them).
    """
    # the fields (see packet.pyx); src and dst read back in canonical form
    cdef object version, tc, fl, plen, nh, hlim, src, dst, ext
    cdef uint8_t _src[16]             # src and dst as bytes, for building
    cdef uint8_t _dst[16]

    _field_names = ("version", "tc", "fl", "plen", "nh", "hlim", "src", "dst", "ext")
    _rules = {"version": ("IPv6.version", 15, False), "tc": ("IPv6.tc", 0xFF, False),
              "fl": ("IPv6.fl", 0xFFFFF, False), "plen": ("IPv6.plen", 0xFFFF, True),
              "nh": ("IPv6.nh", 0xFF, True), "hlim": ("IPv6.hlim", 0xFF, False)}
    _first = "ipv6"

    def __cinit__(self):
        self._kind = K_IPV6             # (here, not in __init__: IPv6.__new__(IPv6) is one)

    def __init__(self, version=6, tc=0, fl=0, plen=None, nh=None, hlim=64, src="::",
                 dst="::1", ext=None):
        self._payload = EMPTY
        self.version = (6 if version == 6 and type(version) is int
                        else field_value(version, 15, "IPv6.version"))
        self.tc = 0 if tc is 0 else field_value(tc, 0xFF, "IPv6.tc")
        self.fl = 0 if fl is 0 else field_value(fl, 0xFFFFF, "IPv6.fl")
        self.plen = opt_value(plen, 0xFFFF, "IPv6.plen")
        self.nh = opt_value(nh, 0xFF, "IPv6.nh")
        self.hlim = 64 if hlim is 64 else field_value(hlim, 0xFF, "IPv6.hlim")
        self.src = ip_address(self._src, src, AF_INET6, "IPv6.src")
        self.dst = ip_address(self._dst, dst, AF_INET6, "IPv6.dst")
        self.ext = EMPTY if ext is None else ipv6_ext(ext)

    cdef bint set_special(self, str name, object value) except -1:
        if name == "src":
            self.src = ip_address(self._src, value, AF_INET6, "IPv6.src")
        elif name == "dst":
            self.dst = ip_address(self._dst, value, AF_INET6, "IPv6.dst")
        elif name == "ext":
            self.ext = EMPTY if value is None else ipv6_ext(value)
        else:
            return False
        return True

    cdef Py_ssize_t header_len(self) except -1:
        if self.ext is None:            # made with IPv6.__new__ and never initialised
            self.ext = EMPTY
        return IPV6_HEADER + ext_length(self.ext)

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        cdef Py_ssize_t plen = self._size - IPV6_HEADER, extlen = ext_length(self.ext)
        cdef long nh = opt_long(<PyObject *>self.nh, 0xFF, "IPv6.nh")
        cdef long given_plen = opt_long(<PyObject *>self.plen, 0xFFFF, "IPv6.plen")
        cdef uint32_t version = field_long(<PyObject *>self.version, 15, "IPv6.version")
        cdef uint32_t tc = field_long(<PyObject *>self.tc, 0xFF, "IPv6.tc")
        cdef uint32_t fl = field_long(<PyObject *>self.fl, 0xFFFFF, "IPv6.fl")
        if IPV6_HEADER + extlen != self._hlen:       # measured with other extension headers
            raise PacketError("IPv6.ext changed while the packet was built")
        if given_plen < 0 and plen > 0xFFFF:
            raise PacketError(f"IPv6 payload of {plen} bytes is longer than 65535")
        if nh < 0:
            if extlen:
                raise PacketError("IPv6.nh must be given when ext holds extension headers")
            nh = proto_of(self._payload, True)
        store_be32(p, (version << 28) | (tc << 20) | fl)
        store_be16(p + 4, <uint16_t>(given_plen if given_plen >= 0 else plen))
        p[6] = <uint8_t>nh
        p[7] = <uint8_t>field_long(<PyObject *>self.hlim, 0xFF, "IPv6.hlim")
        memcpy(p + 8, self._src, 16)
        memcpy(p + 24, self._dst, 16)
        if extlen:
            memcpy(p + IPV6_HEADER, PyBytes_AS_STRING(self.ext), extlen)
        return 0

    cdef uint64_t pseudo(self, int proto, Py_ssize_t length) except? 0xFFFFFFFFFFFFFFFF:
        # RFC 8200 8.1: with a Routing header that still has segments left, the pseudo-header
        # holds the final destination (the last address of type 0/2, the first segment of a
        # type 4 segment routing header); at the final node it is the header's dst.
        cdef const uint8_t *final = self._dst
        cdef const uint8_t *e
        cdef Py_ssize_t n = ext_length(self.ext) if self.ext is not None else 0
        cdef Py_ssize_t pos = 0, elen, count
        cdef long nh = opt_long(<PyObject *>self.nh, 0xFF, "IPv6.nh")
        while n and is_extension(nh) and pos + 8 <= n:
            e = <const uint8_t *>PyBytes_AS_STRING(self.ext) + pos
            elen = (8 if nh == PROTO_FRAGMENT
                    else (e[1] + 2) * 4 if nh == PROTO_AH else (e[1] + 1) * 8)
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
        c.version, c.tc, c.fl, c.plen, c.nh = self.version, self.tc, self.fl, self.plen, self.nh
        c.hlim, c.src, c.dst, c.ext = self.hlim, self.src, self.dst, self.ext
        memcpy(c._src, self._src, 16)
        memcpy(c._dst, self._dst, 16)
        return c

    cdef tuple values(self):
        return (self.version, self.tc, self.fl, self.plen, self.nh, self.hlim, self.src,
                self.dst, self.ext)


cdef extern from *:
    # the field slots in IPv6's instance struct (public class csock_IPv6)
    Py_ssize_t IPV6_VERSION "offsetof(struct csock_IPv6, version)"
    Py_ssize_t IPV6_TC "offsetof(struct csock_IPv6, tc)"
    Py_ssize_t IPV6_FL "offsetof(struct csock_IPv6, fl)"
    Py_ssize_t IPV6_PLEN "offsetof(struct csock_IPv6, plen)"
    Py_ssize_t IPV6_NH "offsetof(struct csock_IPv6, nh)"
    Py_ssize_t IPV6_HLIM "offsetof(struct csock_IPv6, hlim)"
    Py_ssize_t IPV6_SRC "offsetof(struct csock_IPv6, src)"
    Py_ssize_t IPV6_DST "offsetof(struct csock_IPv6, dst)"
    Py_ssize_t IPV6_EXT "offsetof(struct csock_IPv6, ext)"

cdef Py_ssize_t _ipv6_slots[9]
_ipv6_slots[:] = [IPV6_VERSION, IPV6_TC, IPV6_FL, IPV6_PLEN, IPV6_NH, IPV6_HLIM, IPV6_SRC,
                  IPV6_DST, IPV6_EXT]
install_members(IPv6, IPv6._field_names, _ipv6_slots, True)
cache_instances(<PyTypeObject *>IPv6)     # @cython.freelist would not apply to a subclass


cdef bytes ipv6_ext(object value):
    cdef bytes b = field_options(value, "IPv6.ext", 0xFFFF)
    if PyBytes_GET_SIZE(b) % 8:
        raise ValueError(f"IPv6.ext must be a multiple of 8 bytes long, got {PyBytes_GET_SIZE(b)}")
    return b


cdef Py_ssize_t ext_length(object value) except -1:
    """The length of the ext slot (see ipv6_ext), checked where C reads it."""
    cdef Py_ssize_t n = options_length(value, 0xFFFF, "IPv6.ext")
    if n % 8:
        raise ValueError(f"IPv6.ext must be a multiple of 8 bytes long, got {n}")
    return n


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
            # counted in 4-byte words, but in IPv6 a whole number of 8-byte units (RFC 4302
            # 2.2), as ext must be for the packet to measure and build again
            elen = (p[pos + 1] + 2) * 4
            if elen % 8:
                raise PacketError(f"IPv6 AH header of {elen} bytes is not a multiple of 8 "
                                  f"bytes long")
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
    ip._clean = True
    ip._owner = owner
    ip._off = off
    ip._end = end
    ip.version = 6
    ip.tc = small_int((word >> 20) & 0xFF)
    ip.fl = PyLong_FromUnsignedLong(word & 0xFFFFF)
    ip.plen = small_int(total - IPV6_HEADER)
    ip.nh = small_int(p[6])
    ip.hlim = small_int(p[7])
    memcpy(ip._src, p + 8, 16)
    memcpy(ip._dst, p + 24, 16)
    ip.src = address_str(ip._src, AF_INET6)
    ip.dst = address_str(ip._dst, AF_INET6)
    ip.ext = (EMPTY if pos == IPV6_HEADER
              else PyBytes_FromStringAndSize(<const char *>p + IPV6_HEADER, pos - IPV6_HEADER))
    if total < n:
        ip._trailer = PyBytes_FromStringAndSize(<const char *>p + total, n - total)
    if whole:
        parse_upper(ip, nh, owner, base, off + pos, off + total, depth)
    else:
        set_lazy(ip, owner, off + pos, off + total)
    return ip
