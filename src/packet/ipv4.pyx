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

cimport cython
from cpython.ref cimport PyObject
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.object cimport PyTypeObject
from includes.instancecache cimport cache_instances
from csock._fastio cimport install_members
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.string cimport memcpy, memset
from includes.byteorder cimport load_be16, store_be16
from includes.socket cimport AF_INET


cdef enum:
    IPV4_HEADER = 20
    IPV4_MAX_OPTIONS = 40


@cython.final
@cython.no_gc
cdef public class IPv4(Layer) [object csock_IPv4, type csock_IPv4_Type]:
    """An IPv4 header. Defaults as scapy's IP: version 4, ttl 64, id 1, src 0.0.0.0,
    dst 127.0.0.1; ihl, len, proto and chksum None (computed by bytes()).

    Attributes
    ----------
    version : int
        4.
    ihl : int or None
        Header length in 32-bit words; None: computed.
    tos : int
        Type of service (DSCP and ECN).
    len : int or None
        Total length; None: computed.
    id : int
        Identification.
    flags : int
        The 3 flag bits (DF 2, MF 1).
    frag : int
        Fragment offset, in 8-byte units.
    ttl : int
        Time to live.
    proto : int or None
        The next protocol; None: from the next layer.
    chksum : int or None
        Header checksum; None: computed.
    src : str
        Source address, dotted quad.
    dst : str
        Destination address, dotted quad.
    options : bytes or None
        Raw IPv4 options (padded to 4 bytes by bytes()).
    """
    # the fields (object slots read as attributes: see packet.pyx)
    cdef object version, ihl, tos, len, id, flags, frag, ttl, proto, chksum, src, dst, options
    cdef uint8_t _src[4]              # src and dst as bytes, for building
    cdef uint8_t _dst[4]

    _field_names = ("version", "ihl", "tos", "len", "id", "flags", "frag", "ttl", "proto",
                    "chksum", "src", "dst", "options")
    _rules = {"version": ("IPv4.version", 15, False), "ihl": ("IPv4.ihl", 15, True),
              "tos": ("IPv4.tos", 0xFF, False), "len": ("IPv4.len", 0xFFFF, True),
              "id": ("IPv4.id", 0xFFFF, False), "frag": ("IPv4.frag", 0x1FFF, False),
              "ttl": ("IPv4.ttl", 0xFF, False), "proto": ("IPv4.proto", 0xFF, True),
              "chksum": ("IPv4.chksum", 0xFFFF, True)}
    _first = "ipv4"

    def __cinit__(self):
        self._kind = K_IPV4             # (here, not in __init__: IPv4.__new__(IPv4) is one)

    def __init__(self, version=4, ihl=None, tos=0, len=None, id=1, flags=0, frag=0, ttl=64,
                 proto=None, chksum=None, src="0.0.0.0", dst="127.0.0.1", options=None):
        self._payload = EMPTY
        self.version = (4 if version == 4 and type(version) is int
                        else field_value(version, 15, "IPv4.version"))
        self.ihl = opt_value(ihl, 15, "IPv4.ihl")
        self.tos = 0 if tos is 0 else field_value(tos, 0xFF, "IPv4.tos")
        self.len = opt_value(len, 0xFFFF, "IPv4.len")
        self.id = field_value(id, 0xFFFF, "IPv4.id")
        self.flags = 0 if flags is 0 else small_int(ipv4_flags(flags))
        self.frag = 0 if frag is 0 else field_value(frag, 0x1FFF, "IPv4.frag")
        self.ttl = 64 if ttl is 64 else field_value(ttl, 0xFF, "IPv4.ttl")
        self.proto = opt_value(proto, 0xFF, "IPv4.proto")
        self.chksum = opt_value(chksum, 0xFFFF, "IPv4.chksum")
        self.src = ip_address(self._src, src, AF_INET, "IPv4.src")
        self.dst = ip_address(self._dst, dst, AF_INET, "IPv4.dst")
        self.options = (EMPTY if options is None
                        else field_options(options, "IPv4.options", IPV4_MAX_OPTIONS))

    cdef bint set_special(self, str name, object value) except -1:
        if name == "src":
            self.src = ip_address(self._src, value, AF_INET, "IPv4.src")
        elif name == "dst":
            self.dst = ip_address(self._dst, value, AF_INET, "IPv4.dst")
        elif name == "flags":
            self.flags = small_int(ipv4_flags(value))
        elif name == "options":
            self.options = field_options(value, "IPv4.options", IPV4_MAX_OPTIONS)
        else:
            return False
        return True

    cdef Py_ssize_t header_len(self) except -1:
        if self.options is None:        # made with IPv4.__new__ and never initialised
            self.options = EMPTY
        return IPV4_HEADER + (options_length(self.options, IPV4_MAX_OPTIONS, "IPv4.options")
                              + 3) // 4 * 4

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        cdef Py_ssize_t nopt = options_length(self.options, IPV4_MAX_OPTIONS, "IPv4.options")
        cdef Py_ssize_t hlen = self._hlen
        cdef long ihl = opt_long(<PyObject *>self.ihl, 15, "IPv4.ihl")
        cdef long length = opt_long(<PyObject *>self.len, 0xFFFF, "IPv4.len")
        cdef long proto = opt_long(<PyObject *>self.proto, 0xFF, "IPv4.proto")
        cdef long chksum = opt_long(<PyObject *>self.chksum, 0xFFFF, "IPv4.chksum")
        cdef long version = field_long(<PyObject *>self.version, 15, "IPv4.version")
        cdef long flags = field_long(<PyObject *>self.flags, 7, "IPv4.flags")
        cdef long frag = field_long(<PyObject *>self.frag, 0x1FFF, "IPv4.frag")
        if IPV4_HEADER + (nopt + 3) // 4 * 4 != hlen:     # measured with other options
            raise PacketError("IPv4.options changed while the packet was built")
        if length < 0 and self._size > 0xFFFF:
            raise PacketError(f"IPv4 packet of {self._size} bytes is longer than 65535")
        p[0] = <uint8_t>((version << 4) | ((ihl if ihl >= 0 else hlen >> 2) & 0xF))
        p[1] = <uint8_t>field_long(<PyObject *>self.tos, 0xFF, "IPv4.tos")
        store_be16(p + 2, <uint16_t>(length if length >= 0 else self._size))
        store_be16(p + 4, <uint16_t>field_long(<PyObject *>self.id, 0xFFFF, "IPv4.id"))
        store_be16(p + 6, <uint16_t>((flags << 13) | frag))
        p[8] = <uint8_t>field_long(<PyObject *>self.ttl, 0xFF, "IPv4.ttl")
        p[9] = <uint8_t>(proto if proto >= 0 else proto_of(self._payload, False))
        p[10] = 0
        p[11] = 0
        memcpy(p + 12, self._src, 4)
        memcpy(p + 16, self._dst, 4)
        if nopt:
            memcpy(p + IPV4_HEADER, PyBytes_AS_STRING(self.options), nopt)
            memset(p + IPV4_HEADER + nopt, 0, hlen - IPV4_HEADER - nopt)
        if chksum >= 0:
            store_be16(p + 10, <uint16_t>chksum)
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
        c.version, c.ihl, c.tos, c.len, c.id = self.version, self.ihl, self.tos, self.len, self.id
        c.flags, c.frag, c.ttl, c.proto = self.flags, self.frag, self.ttl, self.proto
        c.chksum, c.src, c.dst, c.options = self.chksum, self.src, self.dst, self.options
        memcpy(c._src, self._src, 4)
        memcpy(c._dst, self._dst, 4)
        return c

    cdef tuple values(self):
        return (self.version, self.ihl, self.tos, self.len, self.id, self.flags, self.frag,
                self.ttl, self.proto, self.chksum, self.src, self.dst, self.options)


cdef extern from *:
    # the field slots in IPv4's instance struct (public class csock_IPv4)
    Py_ssize_t IPV4_VERSION "offsetof(struct csock_IPv4, version)"
    Py_ssize_t IPV4_IHL "offsetof(struct csock_IPv4, ihl)"
    Py_ssize_t IPV4_TOS "offsetof(struct csock_IPv4, tos)"
    Py_ssize_t IPV4_LEN "offsetof(struct csock_IPv4, len)"
    Py_ssize_t IPV4_ID "offsetof(struct csock_IPv4, id)"
    Py_ssize_t IPV4_FLAGS "offsetof(struct csock_IPv4, flags)"
    Py_ssize_t IPV4_FRAG "offsetof(struct csock_IPv4, frag)"
    Py_ssize_t IPV4_TTL "offsetof(struct csock_IPv4, ttl)"
    Py_ssize_t IPV4_PROTO "offsetof(struct csock_IPv4, proto)"
    Py_ssize_t IPV4_CHKSUM "offsetof(struct csock_IPv4, chksum)"
    Py_ssize_t IPV4_SRC "offsetof(struct csock_IPv4, src)"
    Py_ssize_t IPV4_DST "offsetof(struct csock_IPv4, dst)"
    Py_ssize_t IPV4_OPTIONS "offsetof(struct csock_IPv4, options)"

cdef Py_ssize_t _ipv4_slots[13]
_ipv4_slots[:] = [IPV4_VERSION, IPV4_IHL, IPV4_TOS, IPV4_LEN, IPV4_ID, IPV4_FLAGS, IPV4_FRAG,
                  IPV4_TTL, IPV4_PROTO, IPV4_CHKSUM, IPV4_SRC, IPV4_DST, IPV4_OPTIONS]
install_members(IPv4, IPv4._field_names, _ipv4_slots, True)
cache_instances(<PyTypeObject *>IPv4)     # @cython.freelist would not apply to a subclass


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
    ip._clean = True
    ip._owner = owner
    ip._off = off
    ip._end = end
    fragword = load_be16(p + 6)
    ip.version = 4
    ip.ihl = small_int(p[0] & 0xF)
    ip.tos = small_int(p[1])
    ip.len = small_int(total)
    ip.id = small_int(load_be16(p + 4))
    ip.flags = small_int(fragword >> 13)
    ip.frag = small_int(fragword & 0x1FFF)
    ip.ttl = small_int(p[8])
    ip.proto = small_int(p[9])
    ip.chksum = small_int(load_be16(p + 10))
    memcpy(ip._src, p + 12, 4)
    memcpy(ip._dst, p + 16, 4)
    ip.src = address_str(ip._src, AF_INET)
    ip.dst = address_str(ip._dst, AF_INET)
    ip.options = (EMPTY if hlen == IPV4_HEADER
                  else PyBytes_FromStringAndSize(<const char *>p + IPV4_HEADER, hlen - IPV4_HEADER))
    if total < n:
        ip._trailer = PyBytes_FromStringAndSize(<const char *>p + total, n - total)
    if (fragword & 0x3FFF) != 0:
        # a fragment (more to come or not the first): the upper header may not be whole
        set_lazy(ip, owner, off + hlen, off + total)
    else:
        parse_upper(ip, p[9], owner, base, off + hlen, off + total, depth)
    return ip
