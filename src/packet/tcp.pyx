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

cimport cython
from cpython.ref cimport PyObject
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.long cimport PyLong_FromUnsignedLong
from cpython.object cimport PyTypeObject
from includes.instancecache cimport cache_instances
from csock._fastio cimport install_members
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from includes.byteorder cimport load_be16, load_be32, store_be16, store_be32


cdef enum:
    TCP_HEADER = 20
    TCP_MAX_OPTIONS = 40


@cython.final
@cython.no_gc
cdef public class TCP(Layer) [object csock_TCP, type csock_TCP_Type]:
    """A TCP header. Defaults as scapy's: sport 20, dport 80, flags S (0x02), window 8192;
    dataofs and chksum None (computed by bytes()). flags also takes scapy's letters ("SA").

    Attributes
    ----------
    sport : int
        Source port.
    dport : int
        Destination port.
    seq : int
        Sequence number.
    ack : int
        Acknowledgement number.
    dataofs : int or None
        Header length in 32-bit words; None: computed.
    reserved : int
        The reserved bits.
    flags : int
        Flag bits (``TCP_SYN`` ...); also takes scapy's letters, ``"SA"``.
    window : int
        Receive window.
    chksum : int or None
        Checksum with the IP pseudo-header; None: computed.
    urgptr : int
        Urgent pointer.
    options : bytes or None
        Raw TCP options (padded to 4 bytes by bytes()).
    """
    # the fields (see packet.pyx)
    cdef object sport, dport, seq, ack, dataofs, reserved, flags, window, chksum, urgptr, options

    _field_names = ("sport", "dport", "seq", "ack", "dataofs", "reserved", "flags", "window",
                    "chksum", "urgptr", "options")
    _rules = {"sport": ("TCP.sport", 0xFFFF, False), "dport": ("TCP.dport", 0xFFFF, False),
              "seq": ("TCP.seq", 0xFFFFFFFF, False), "ack": ("TCP.ack", 0xFFFFFFFF, False),
              "dataofs": ("TCP.dataofs", 15, True), "reserved": ("TCP.reserved", 7, False),
              "window": ("TCP.window", 0xFFFF, False), "chksum": ("TCP.chksum", 0xFFFF, True),
              "urgptr": ("TCP.urgptr", 0xFFFF, False)}
    _first = "tcp"

    def __cinit__(self):
        self._kind = K_TCP             # (here, not in __init__: TCP.__new__(TCP) is one)

    def __init__(self, sport=20, dport=80, seq=0, ack=0, dataofs=None, reserved=0, flags=2,
                 window=8192, chksum=None, urgptr=0, options=None):
        self._payload = EMPTY
        self.sport = field_value(sport, 0xFFFF, "TCP.sport")
        self.dport = field_value(dport, 0xFFFF, "TCP.dport")
        self.seq = 0 if seq is 0 else field_value(seq, 0xFFFFFFFF, "TCP.seq")
        self.ack = 0 if ack is 0 else field_value(ack, 0xFFFFFFFF, "TCP.ack")
        self.dataofs = opt_value(dataofs, 15, "TCP.dataofs")
        self.reserved = 0 if reserved is 0 else field_value(reserved, 7, "TCP.reserved")
        self.flags = small_int(tcp_flags(flags))
        self.window = field_value(window, 0xFFFF, "TCP.window")
        self.chksum = opt_value(chksum, 0xFFFF, "TCP.chksum")
        self.urgptr = 0 if urgptr is 0 else field_value(urgptr, 0xFFFF, "TCP.urgptr")
        self.options = (EMPTY if options is None
                        else field_options(options, "TCP.options", TCP_MAX_OPTIONS))

    cdef bint set_special(self, str name, object value) except -1:
        if name == "flags":
            self.flags = small_int(tcp_flags(value))
        elif name == "options":
            self.options = field_options(value, "TCP.options", TCP_MAX_OPTIONS)
        else:
            return False
        return True

    cdef Py_ssize_t header_len(self) except -1:
        if self.options is None:        # made with TCP.__new__ and never initialised
            self.options = EMPTY
        return TCP_HEADER + (options_length(self.options, TCP_MAX_OPTIONS, "TCP.options")
                             + 3) // 4 * 4

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        cdef Py_ssize_t nopt = options_length(self.options, TCP_MAX_OPTIONS, "TCP.options")
        cdef Py_ssize_t hlen = self._hlen
        cdef long dataofs = opt_long(<PyObject *>self.dataofs, 15, "TCP.dataofs")
        cdef long chksum = opt_long(<PyObject *>self.chksum, 0xFFFF, "TCP.chksum")
        cdef long flags = field_long(<PyObject *>self.flags, 0x1FF, "TCP.flags")
        cdef long reserved = field_long(<PyObject *>self.reserved, 7, "TCP.reserved")
        if TCP_HEADER + (nopt + 3) // 4 * 4 != hlen:      # measured with other options
            raise PacketError("TCP.options changed while the packet was built")
        if dataofs < 0:
            dataofs = hlen >> 2
        store_be16(p, <uint16_t>field_long(<PyObject *>self.sport, 0xFFFF, "TCP.sport"))
        store_be16(p + 2, <uint16_t>field_long(<PyObject *>self.dport, 0xFFFF, "TCP.dport"))
        store_be32(p + 4, <uint32_t><unsigned long>field_long(<PyObject *>self.seq, 0xFFFFFFFF,
                                                              "TCP.seq"))
        store_be32(p + 8, <uint32_t><unsigned long>field_long(<PyObject *>self.ack, 0xFFFFFFFF,
                                                              "TCP.ack"))
        p[12] = <uint8_t>((dataofs << 4) | (reserved << 1) | ((flags >> 8) & 1))
        p[13] = <uint8_t>(flags & 0xFF)
        store_be16(p + 14, <uint16_t>field_long(<PyObject *>self.window, 0xFFFF, "TCP.window"))
        p[16] = 0
        p[17] = 0
        store_be16(p + 18, <uint16_t>field_long(<PyObject *>self.urgptr, 0xFFFF, "TCP.urgptr"))
        if nopt:
            memcpy(p + TCP_HEADER, PyBytes_AS_STRING(self.options), nopt)
            memset(p + TCP_HEADER + nopt, 0, hlen - TCP_HEADER - nopt)
        if chksum >= 0:
            store_be16(p + 16, <uint16_t>chksum)
        elif ip is not None:
            store_be16(p + 16, csum_finish(csum_add(ip.pseudo(PROTO_TCP, self._size), p,
                                                    self._size)))
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
        c.sport, c.dport, c.seq, c.ack = self.sport, self.dport, self.seq, self.ack
        c.dataofs, c.reserved = self.dataofs, self.reserved
        c.flags, c.window = self.flags, self.window
        c.chksum, c.urgptr, c.options = self.chksum, self.urgptr, self.options
        return c

    cdef tuple values(self):
        return (self.sport, self.dport, self.seq, self.ack, self.dataofs, self.reserved,
                self.flags, self.window, self.chksum, self.urgptr, self.options)


cdef extern from *:
    # the field slots in TCP's instance struct (public class csock_TCP)
    Py_ssize_t TCP_SPORT "offsetof(struct csock_TCP, sport)"
    Py_ssize_t TCP_DPORT "offsetof(struct csock_TCP, dport)"
    Py_ssize_t TCP_SEQ "offsetof(struct csock_TCP, seq)"
    Py_ssize_t TCP_ACK "offsetof(struct csock_TCP, ack)"
    Py_ssize_t TCP_DATAOFS "offsetof(struct csock_TCP, dataofs)"
    Py_ssize_t TCP_RESERVED "offsetof(struct csock_TCP, reserved)"
    Py_ssize_t TCP_FLAGS "offsetof(struct csock_TCP, flags)"
    Py_ssize_t TCP_WINDOW "offsetof(struct csock_TCP, window)"
    Py_ssize_t TCP_CHKSUM "offsetof(struct csock_TCP, chksum)"
    Py_ssize_t TCP_URGPTR "offsetof(struct csock_TCP, urgptr)"
    Py_ssize_t TCP_OPTIONS "offsetof(struct csock_TCP, options)"

cdef Py_ssize_t _tcp_slots[11]
_tcp_slots[:] = [TCP_SPORT, TCP_DPORT, TCP_SEQ, TCP_ACK, TCP_DATAOFS, TCP_RESERVED, TCP_FLAGS,
                 TCP_WINDOW, TCP_CHKSUM, TCP_URGPTR, TCP_OPTIONS]
install_members(TCP, TCP._field_names, _tcp_slots, True)
cache_instances(<PyTypeObject *>TCP)     # @cython.freelist would not apply to a subclass


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
    t._clean = True
    t._owner = owner
    t._off = off
    t._end = end
    t.sport = small_int(load_be16(p))
    t.dport = small_int(load_be16(p + 2))
    t.seq = PyLong_FromUnsignedLong(load_be32(p + 4))
    t.ack = PyLong_FromUnsignedLong(load_be32(p + 8))
    t.dataofs = small_int(p[12] >> 4)
    t.reserved = small_int((p[12] >> 1) & 7)
    t.flags = small_int(((p[12] & 1) << 8) | p[13])
    t.window = small_int(load_be16(p + 14))
    t.chksum = small_int(load_be16(p + 16))
    t.urgptr = small_int(load_be16(p + 18))
    t.options = (EMPTY if hlen == TCP_HEADER
                 else PyBytes_FromStringAndSize(<const char *>p + TCP_HEADER, hlen - TCP_HEADER))
    set_lazy(t, owner, off + hlen, end)
    return t
