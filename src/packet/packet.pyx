# csock.packet: the layer machinery shared by IPv4, IPv6, ICMP, ICMPv6, UDP and TCP.
#
# A packet is a chain of Layer objects: each layer's ``_payload`` is the next Layer, a
# bytes-like object (the final payload), or None (empty). Every header field is an object slot
# of its layer (a plain int, None for "computed by bytes()", a str address, option bytes)
# exposed as a member descriptor (members.pyx), so reading ``p.ttl`` is a direct load that
# the interpreter specialises; ints up to 0xFFFF come from one table (small_int) and address
# strings from a cache, so parsing allocates no field objects for the values traffic repeats.
# Stores go through Layer.__setattr__, which validates the value first (see "fields" below);
# IP layers also keep their addresses as raw bytes for building.
#
# Building (bytes(p)) is two passes: measure() walks down the chain and records each layer's
# header length (_hlen) and its length field value (_size = header + payload); build() writes
# each header top-down, the final payload, then fills checksums bottom-up (a checksum covers
# what is under it). Both read one state of the chain: the final payload is exported first
# and no Python code runs from then until the packet is built (see "building" below). A
# parsed layer remembers the buffer it came from (_owner, a bytes object or a read-only
# memoryview, shared by every layer of the packet): the final payload is a view into it, and
# bytes() of an untouched parsed packet returns the input bytes object itself. That
# memoryview is never handed out: its export holds the memory in place. Every setter, and
# stacking, marks the layer dirty (_clean = False).
cimport cython
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeLatin1
from cpython.long cimport (PyLong_CheckExact, PyLong_FromLong, PyLong_FromUnsignedLong,
                           PyLong_AsLongAndOverflow)
from cpython.object cimport PyTypeObject
from includes.instancecache cimport cache_instances
from csock._fastio cimport ReadOnlyView, install_members, store_member
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memcmp, strlen
from includes.fields cimport csock_small_nonneg_long
from includes.inet cimport inet_pton, inet_ntop
from includes.socket cimport AF_INET


class PacketError(ValueError):
    """Truncated or inconsistent packet bytes, or a checksum that does not match."""


cdef enum:
    # layer kinds (Layer._kind)
    K_IPV4 = 1
    K_IPV6 = 2
    K_ICMP = 3
    K_ICMPV6 = 4
    K_UDP = 5
    K_TCP = 6
    # IP protocol numbers
    PROTO_HOPOPT = 0
    PROTO_ICMP = 1
    PROTO_IPIP = 4
    PROTO_TCP = 6
    PROTO_UDP = 17
    PROTO_IPV6 = 41
    PROTO_ROUTING = 43
    PROTO_FRAGMENT = 44
    PROTO_AH = 51
    PROTO_ICMPV6 = 58
    PROTO_NONE = 59
    PROTO_DSTOPTS = 60
    # IP-in-IP nesting parsed before the rest is left as raw bytes
    MAX_DEPTH = 8
    # layers a packet may stack (building recurses once per layer)
    MAX_LAYERS = 256

cdef bytes EMPTY = b""

# --- field values ----------------------------------------------------------------------

cdef long field_int(object value, long limit, str name) except -1:
    """value as a C long in [0, limit]: TypeError if it is not an int, ValueError if out of
    range (bool is refused: a flag field wants a number)."""
    cdef long v
    cdef int overflow = 0
    if not PyLong_CheckExact(value):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    v = PyLong_AsLongAndOverflow(value, &overflow)
    if overflow or v < 0 or v > limit:
        raise ValueError(f"{name} must be between 0 and {limit}, got {value!r}")
    return v


cdef PyObject *_ints[0x10000]     # the int objects 0..0xFFFF, each made on first use


cdef inline object small_int(unsigned long v):
    """The int v (0..0xFFFF) from one table: parsed fields repeat (ports, lengths, ids),
    so reading them back allocates nothing. The table holds at most 65536 ints (~2 MiB)."""
    cdef PyObject *o = _ints[v]
    if o == NULL:
        value = PyLong_FromUnsignedLong(v)
        Py_INCREF(value)             # the table's reference, kept for the process
        _ints[v] = <PyObject *>value
        return value
    return <object>o


cdef inline object field_value(object value, long limit, str name):
    """value checked as field_int does, as a plain int (an IntEnum or other int subclass is
    stored as the int it equals)."""
    cdef long v = field_int(value, limit, name)
    return small_int(v) if limit <= 0xFFFF else PyLong_FromLong(v)


cdef inline object opt_value(object value, long limit, str name):
    """A field that None makes computed by bytes()."""
    return None if value is None else field_value(value, limit, name)


# Where C code reads a field slot it checks the value again (type and range), whatever put it
# there: __setattr__ validates, but C must not trust a slot to hold what it expects (a rule
# table changed at run time, a layer made with __new__); a wrong value raises, it never
# builds a header of the wrong size or writes bits into the next field.

cdef inline long field_long(PyObject *v, long limit, str name) except? -1:
    """A field slot as a C long in [0, limit] (None, left by __new__ without __init__, builds
    as 0); TypeError/ValueError otherwise. Takes the slot's pointer
    (``field_long(<PyObject *>self.ttl, 0xFF, "IPv4.ttl")``): no reference counting."""
    cdef long value
    if v == <PyObject *>None:
        return 0
    value = csock_small_nonneg_long(v)
    if 0 <= value <= limit:
        return value
    return large_slot(<object>v, limit, name)


cdef inline long opt_long(PyObject *v, long limit, str name) except? -2:
    """A field slot as field_long reads it, -1 for None (computed by bytes())."""
    if v == <PyObject *>None:
        return -1
    return field_long(v, limit, name)


cdef long large_slot(object value, long limit, str name) except? -1:
    """field_long for a value it cannot read inline: a large int in range (TCP.seq), or an
    error."""
    cdef long v
    cdef int overflow = 0
    if PyLong_CheckExact(value):
        v = PyLong_AsLongAndOverflow(value, &overflow)
        if overflow == 0 and 0 <= v <= limit:
            return v
    field_int(value, limit, name)        # raises TypeError or ValueError
    raise TypeError(f"{name} must be a plain int, not {type(value).__name__}")


cdef inline Py_ssize_t options_length(object value, Py_ssize_t limit, str name) except -1:
    """The length of an option-bytes slot (see field_options), checked where C reads it."""
    cdef Py_ssize_t n
    if type(value) is bytes:
        n = PyBytes_GET_SIZE(value)
        if (n + 3) // 4 * 4 <= limit:
            return n
    return bad_options(value, limit, name)


cdef Py_ssize_t bad_options(object value, Py_ssize_t limit, str name) except -1:
    if type(value) is not bytes:
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    raise ValueError(f"{name} can hold at most {limit} bytes, got {PyBytes_GET_SIZE(value)}")


cdef bytes field_options(object value, str name, Py_ssize_t limit):
    """Raw option bytes (at most limit bytes once padded to a multiple of 4)."""
    cdef bytes b
    if value is None:
        return EMPTY
    if type(value) is bytes:
        b = <bytes>value
    elif isinstance(value, (str, int)):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    else:
        try:
            b = memoryview(value).tobytes()
        except TypeError:
            raise TypeError(f"{name} must be bytes, not {type(value).__name__}") from None
    if (PyBytes_GET_SIZE(b) + 3) // 4 * 4 > limit:
        raise ValueError(f"{name} can hold at most {limit} bytes, got {PyBytes_GET_SIZE(b)}")
    return b


# Address caches: a program tends to send to the same few addresses, passing the same str
# objects. Direct-mapped by object identity (the cache holds a reference, so an identity is
# never reused while cached); 16 entries per family.
cdef enum:
    ADDRESS_CACHE = 16

cdef list _v4_keys = [None] * ADDRESS_CACHE
cdef uint8_t _v4_vals[ADDRESS_CACHE][4]
cdef list _v6_keys = [None] * ADDRESS_CACHE
cdef uint8_t _v6_vals[ADDRESS_CACHE][16]


cdef int set_address(uint8_t *out, object value, int family, str name) except -1:
    """Parse an address (str, or an ipaddress object / packed bytes of the right size)."""
    cdef const char *s
    cdef const char *data = NULL
    cdef Py_ssize_t n = 0
    cdef int size = 4 if family == AF_INET else 16
    cdef size_t slot
    if type(value) is str:
        slot = (<size_t><PyObject *>value >> 4) % ADDRESS_CACHE
        if family == AF_INET:
            if _v4_keys[slot] is value:
                memcpy(out, _v4_vals[slot], 4)
                return 0
        elif _v6_keys[slot] is value:
            memcpy(out, _v6_vals[slot], 16)
            return 0
        s = PyUnicode_AsUTF8AndSize(value, &n)
        if <size_t>n != strlen(s) or inet_pton(family, s, out) != 1:
            raise ValueError(f"{name} is not a valid {'IPv4' if size == 4 else 'IPv6'} "
                             f"address: {value!r}")
        if family == AF_INET:
            _v4_keys[slot] = value
            memcpy(_v4_vals[slot], out, 4)
        else:
            _v6_keys[slot] = value
            memcpy(_v6_vals[slot], out, 16)
        return 0
    packed = getattr(value, "packed", None) if not isinstance(value, (bytes, bytearray)) else value
    if isinstance(packed, (bytes, bytearray)):
        # (the buffer's own length and memory: a subclass's __len__ may say anything)
        if isinstance(packed, bytes):
            n, data = PyBytes_GET_SIZE(packed), PyBytes_AS_STRING(packed)
        else:
            n, data = PyByteArray_GET_SIZE(packed), PyByteArray_AS_STRING(packed)
        if n != size:
            raise ValueError(f"{name} must be {size} packed bytes, got {n}")
        memcpy(out, data, size)
        return 0
    raise TypeError(f"{name} must be a str address, not {type(value).__name__}")


cdef str ip_address(uint8_t *out, object value, int family, str name):
    """Parse an address into out (set_address) and return the str the field reads back: an
    IPv4 str as given (inet_pton takes only the canonical dotted quad), else the canonical
    form."""
    set_address(out, value, family, name)
    if family == AF_INET and type(value) is str:
        return <str>value
    return address_str(out, family)


# Address strings of parsed packets, direct-mapped by the address bytes (64 per family).
cdef enum:
    STR_CACHE_BITS = 6
    STR_CACHE = 1 << STR_CACHE_BITS

cdef uint8_t _v4_str_keys[STR_CACHE * 4]
cdef list _v4_strs = [None] * STR_CACHE
cdef uint8_t _v6_str_keys[STR_CACHE * 16]
cdef list _v6_strs = [None] * STR_CACHE


cdef str address_str(const uint8_t *raw, int family):
    """The str form of a raw IPv4 or IPv6 address (cached: traffic repeats addresses)."""
    cdef int size = 4 if family == AF_INET else 16
    cdef uint32_t h = 0, w = 0
    cdef int i
    cdef uint8_t *key
    cdef list strs = _v4_strs if family == AF_INET else _v6_strs
    for i in range(0, size, 4):
        memcpy(&w, raw + i, 4)
        h ^= w
    cdef size_t slot = (h * <uint32_t>2654435761u) >> (32 - STR_CACHE_BITS)
    key = (&_v4_str_keys[0] if family == AF_INET else &_v6_str_keys[0]) + slot * size
    text = strs[slot]
    if text is not None and memcmp(key, raw, size) == 0:
        return <str>text
    text = format_address(raw, family)
    memcpy(key, raw, size)
    strs[slot] = text
    return <str>text


cdef str format_address(const uint8_t *raw, int family):
    cdef char text[48]
    cdef char *at = text
    cdef int i, b
    if family == AF_INET:
        # dotted quad by hand: inet_ntop goes through sprintf
        for i in range(4):
            b = raw[i]
            if b >= 100:
                at[0] = <char>(48 + b // 100)
                at[1] = <char>(48 + b // 10 % 10)
                at += 2
            elif b >= 10:
                at[0] = <char>(48 + b // 10)
                at += 1
            at[0] = <char>(48 + b % 10)
            at[1] = 46   # '.'
            at += 2
        return PyUnicode_DecodeLatin1(text, at - text - 1, NULL)
    inet_ntop(family, raw, text, sizeof(text))
    return PyUnicode_DecodeLatin1(text, strlen(text), NULL)


# --- buffers ---------------------------------------------------------------------------

cdef inline const uint8_t *owner_data(object owner) noexcept:
    """Start of a parsed packet's buffer: a bytes object or a read-only memoryview."""
    if type(owner) is bytes:
        return <const uint8_t *>PyBytes_AS_STRING(owner)
    return <const uint8_t *>PyMemoryView_GET_BUFFER(owner).buf


cdef inline Py_ssize_t owner_size(object owner) noexcept:
    if type(owner) is bytes:
        return PyBytes_GET_SIZE(owner)
    return PyMemoryView_GET_BUFFER(owner).len


@cython.final
@cython.no_gc
# Pickled by ReadOnlyView.__reduce__ (as bytes). Cython does not see that base's pointer field
# from this module and would add a __reduce_cython__ that reads it as a C string.
@cython.auto_pickle(False)
cdef class PayloadView(ReadOnlyView):
    """The payload of a parsed packet: a read-only, bytes-like view (buffer protocol) into
    the parsed buffer, which it keeps alive; compares equal to bytes with the same content.
    ``memoryview(view)`` refers to the same memory; ``bytes(view)`` copies it out."""
    cdef object owner

    _repr_name = "csock.packet.PayloadView"

    @property
    def obj(self):
        """The buffer the packet was parsed from: the bytes object, or a new read-only
        memoryview of it (releasing that leaves the packet's own view, and so the buffer's
        export, in place)."""
        if type(self.owner) is bytes or self.owner is None:
            return self.owner
        # never the owner itself: its export is the one thing keeping the memory this view
        # and the layers point into from being resized or freed
        return PyMemoryView_FromObject(self.owner)


cache_instances(<PyTypeObject *>PayloadView)


cdef object payload_view(object owner, Py_ssize_t start, Py_ssize_t end):
    """A read-only view of owner[start:end] (no copy)."""
    cdef PayloadView view = PayloadView.__new__(PayloadView)
    view.owner = owner
    view.ptr = <const char *>owner_data(owner) + start
    view.length = end - start
    return view


cdef Py_ssize_t buffer_size(object data) except -1:
    cdef Py_buffer view
    if type(data) is bytes:
        return PyBytes_GET_SIZE(data)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    n = view.len
    PyBuffer_Release(&view)
    return n


# --- building --------------------------------------------------------------------------
# Exporting a final payload can run Python code (a class's __buffer__, Python 3.12+), which
# may restack, change or measure the very chain being built. So it is exported once, before
# anything is measured (export_leaf); measure(), build_at() and check_chain() then read that
# export and run no Python code, so the chain cannot change under them. bytes and a parsed
# payload (a view of the layer's _owner) are read directly: they run no code.

cdef struct Leaf:
    PyObject *payload         # the final payload exported (a reference held), or NULL
    Py_buffer view            # its buffer, while exported


cdef int export_leaf(Layer top, Leaf *leaf) except -1:
    """Export the final payload of top's chain into leaf if it needs exporting."""
    cdef Layer layer = top
    cdef object pl = layer._payload
    leaf.payload = NULL
    while isinstance(pl, Layer):
        layer = <Layer>pl
        pl = layer._payload
    if layer._lazy or pl is None or type(pl) is bytes:
        return 0
    PyObject_GetBuffer(pl, &leaf.view, PyBUF_SIMPLE)
    Py_INCREF(pl)
    leaf.payload = <PyObject *>pl
    return 0


cdef void release_leaf(Leaf *leaf) noexcept:
    """Release what export_leaf took (its __release_buffer__ may run: building is over)."""
    if leaf.payload != NULL:
        PyBuffer_Release(&leaf.view)
        Py_XDECREF(leaf.payload)
        leaf.payload = NULL


cdef int leaf_buffer(object pl, const Leaf *leaf, const char **data, Py_ssize_t *n) except -1:
    """The bytes of a final payload that is not a parsed view: bytes, or the one export_leaf
    exported (any other is a payload stored by code the export ran)."""
    if type(pl) is bytes:
        data[0] = PyBytes_AS_STRING(pl)
        n[0] = PyBytes_GET_SIZE(pl)
    elif leaf != NULL and <PyObject *>pl == leaf.payload:
        data[0] = <const char *>leaf.view.buf
        n[0] = leaf.view.len
    else:
        raise PacketError("the payload changed while the packet was built")
    return 0


# --- the base layer --------------------------------------------------------------------

@cython.no_gc
cdef public class Layer [object csock_Layer, type csock_Layer_Type]:
    """One protocol header and what it carries (``payload``: the next layer or bytes).

    ``a / b`` stacks b under a's innermost layer; ``bytes(p)`` builds the packet, computing
    every field left as None; ``p[UDP]`` finds a layer; ``p.verify()`` checks checksums.

    Attributes
    ----------
    payload : Layer, PayloadView or bytes
        The next layer, or the payload bytes (a read-only view into the parsed buffer).
    """
    cdef int _kind
    cdef bint _clean          # parsed and untouched: bytes() may reuse the input
    cdef bint _lazy           # the payload: a view of _owner[_payload_start:_payload_end]
    cdef object _payload      # next Layer or bytes-like (read as ``payload``)
    cdef object _owner        # parsed: the buffer (bytes or read-only memoryview)
    cdef Py_ssize_t _off, _end          # parsed: this layer's span in _owner (with trailer)
    cdef Py_ssize_t _payload_start, _payload_end    # parsed: the payload's span in _owner
    cdef object _trailer      # parsed: bytes after this layer's length field (or None)
    cdef Py_ssize_t _hlen, _size        # measure(): header length, header + payload

    _field_names = ()
    _first = None
    # int fields: name -> (label for errors, largest value, None allowed)
    _rules = {}

    # per-layer parts, overridden by each header
    cdef bint set_special(self, str name, object value) except -1:
        """Store a field that is not a plain int (an address, flags by name, options) into
        its slot; False if name is not one."""
        return False

    cdef Py_ssize_t header_len(self) except -1:
        return 0

    cdef int write(self, uint8_t *p, Layer ip) except -1:
        """Write this header at p (payload already written after it) and fill the checksum
        if it is computed; ip is the enclosing IP layer (or None)."""
        return 0

    cdef int check(self, const uint8_t *p, Layer ip) except -1:
        """Raise PacketError if this layer's checksum (at p, _size bytes) is wrong."""
        return 0

    cdef uint64_t pseudo(self, int proto, Py_ssize_t length) except? 0xFFFFFFFFFFFFFFFF:
        """Pseudo-header sum for an upper layer (IP layers only)."""
        return 0

    cdef Layer clone(self):
        raise NotImplementedError

    cdef tuple values(self):
        return ()

    # the chain
    cdef int copy_base(self, Layer other) except -1:
        other._kind = self._kind
        other._clean = self._clean
        other._lazy = self._lazy
        other._payload = self._payload
        other._owner = self._owner
        other._off = self._off
        other._end = self._end
        other._payload_start = self._payload_start
        other._payload_end = self._payload_end
        other._trailer = self._trailer
        return 0

    cdef object get_payload(self):
        return EMPTY if self._payload is None else self._payload   # None: made with __new__

    cdef Py_ssize_t measure(self, const Leaf *leaf, int depth=0) except -1:
        """Record _hlen and _size down the chain (its final payload exported into leaf by
        export_leaf, or a parsed one: leaf NULL); the bytes this layer takes in its parent."""
        cdef Py_ssize_t n = 0
        cdef const char *data = NULL
        cdef object pl = self._payload
        self._hlen = self.header_len()
        if isinstance(pl, Layer):
            if depth >= MAX_LAYERS:
                raise PacketError(f"a packet of more than {MAX_LAYERS} layers")
            n = (<Layer>pl).measure(leaf, depth + 1)
        elif self._lazy:
            n = self._payload_end - self._payload_start
        elif pl is None:
            n = 0
        else:
            leaf_buffer(pl, leaf, &data, &n)
        self._size = self._hlen + n
        if self._trailer is not None:
            return self._size + PyBytes_GET_SIZE(self._trailer)
        return self._size

    cdef int build_at(self, uint8_t *p, Layer ip, const Leaf *leaf) except -1:
        """Write this layer, what is under it and its trailer at p (after measure(leaf))."""
        cdef object pl = self._payload
        cdef Layer inner_ip = ip
        cdef const char *data = NULL
        cdef Py_ssize_t n = 0
        if isinstance(pl, Layer):
            if self._kind == K_IPV4 or self._kind == K_IPV6:
                inner_ip = self
            (<Layer>pl).build_at(p + self._hlen, inner_ip, leaf)
        elif self._lazy:
            memcpy(p + self._hlen, owner_data(self._owner) + self._payload_start,
                   self._payload_end - self._payload_start)
        elif pl is not None:
            leaf_buffer(pl, leaf, &data, &n)
            if n != self._size - self._hlen:        # (nothing ran since measure(): a guard)
                raise PacketError("the payload changed while the packet was built")
            memcpy(p + self._hlen, data, n)
        if self._trailer is not None:
            memcpy(p + self._size, PyBytes_AS_STRING(self._trailer),
                   PyBytes_GET_SIZE(self._trailer))
        self.write(p, ip)
        return 0

    cdef bint reusable(self):
        """bytes() may return the parsed input object itself."""
        cdef Layer layer = self
        cdef object owner = self._owner
        if type(owner) is not bytes or self._off != 0 or self._end != PyBytes_GET_SIZE(owner):
            return False
        while True:
            if not layer._clean or layer._owner is not owner:
                return False
            if layer._lazy:
                return True
            if not isinstance(layer._payload, Layer):
                return False
            layer = <Layer>layer._payload

    cdef object tobytes(self):
        if self._clean and self.reusable():
            return self._owner
        return self.assemble(False)

    cdef object assemble(self, bint check):
        """The packet's bytes (the parsed input itself when reusable), and with check its
        checksums verified in them: all from the state export_leaf leaves."""
        cdef Leaf leaf
        cdef Py_ssize_t n
        cdef object out
        export_leaf(self, &leaf)
        try:
            n = self.measure(&leaf)
            if self._clean and self.reusable():
                out = self._owner
                if n != PyBytes_GET_SIZE(out):      # the checks read out by these sizes
                    raise PacketError("the packet changed while it was verified")
            else:
                out = PyBytes_FromStringAndSize(NULL, n)
                self.build_at(<uint8_t *>PyBytes_AS_STRING(out), None, &leaf)
            if check:
                self.check_chain(<const uint8_t *>PyBytes_AS_STRING(out))
        finally:
            release_leaf(&leaf)
        return out

    cdef Py_ssize_t length(self) except -1:
        """len(self): measure() from the state export_leaf leaves."""
        cdef Leaf leaf
        export_leaf(self, &leaf)
        try:
            return self.measure(&leaf)
        finally:
            release_leaf(&leaf)

    cdef int check_chain(self, const uint8_t *p) except -1:
        cdef Layer layer = self
        cdef Layer ip = None
        while True:
            layer.check(p, ip)
            if layer._kind == K_IPV4 or layer._kind == K_IPV6:
                ip = layer
            p += layer._hlen
            if not isinstance(layer._payload, Layer):
                return 0
            layer = <Layer>layer._payload

    cdef Layer chain_copy(self):
        """A copy of every layer of the chain (the final payload object is shared)."""
        cdef Layer top = self.clone()
        cdef Layer layer = top
        while isinstance(layer._payload, Layer):
            layer._payload = (<Layer>layer._payload).clone()
            layer = <Layer>layer._payload
        return top

    # Python surface
    def __setattr__(self, name, value):
        """Fields are checked before they are stored (ValueError/TypeError, the layer left
        as it was); any store marks the layer changed, so bytes() builds it anew."""
        if name == "payload":
            self.set_payload(value)
            return
        rule = type(self)._rules.get(name)
        if rule is not None:
            label, limit, nullable = rule
            value = opt_value(value, limit, label) if nullable else field_value(value, limit, label)
        elif type(name) is str and self.set_special(<str>name, value):
            self._clean = False
            return
        store_member(self, name, value)     # the field descriptors themselves are read-only
        self._clean = False

    def __delattr__(self, name):
        # a field slot must never be emptied: the layer reads its slots without checking
        raise AttributeError(f"{type(self).__name__}.{name} cannot be deleted")

    cdef int set_payload(self, object value) except -1:
        if isinstance(value, Layer):
            layer = value
            while isinstance(layer, Layer):
                if layer is self:
                    raise ValueError("a layer cannot carry itself")
                layer = (<Layer>layer)._payload
        elif value is not None:
            check_bytes_like(value)
        self._payload = EMPTY if value is None else value
        self._lazy = False
        self._clean = False
        return 0

    def __bytes__(self):
        return self.tobytes()

    def build(self):
        """bytes(self)."""
        return self.tobytes()

    def __len__(self):
        return self.length()

    def __truediv__(self, other):
        """self with other stacked under its innermost layer: a new packet (the layers of
        both operands are copied, as scapy does; a final payload object is shared)."""
        cdef Layer top, leaf
        cdef object under = other
        if not isinstance(other, Layer):
            if other is None:
                return NotImplemented
            try:
                check_bytes_like(other)
            except TypeError:
                return NotImplemented
        # Always copies: extending a temporary in place (reference count 1) would be faster,
        # but C code may pass an object borrowed from a container (a numpy object array)
        # whose only reference is the container's, and that object would change under it.
        top = self.chain_copy()
        if isinstance(other, Layer):
            under = (<Layer>other).chain_copy()
        leaf = top
        while isinstance(leaf._payload, Layer):
            leaf = <Layer>leaf._payload
        pl = leaf.get_payload()
        if pl is not None and buffer_size(pl) > 0:
            if isinstance(under, Layer):
                raise TypeError(f"cannot stack {type(other).__name__} after payload bytes")
            under = bytes(pl) + bytes(other)
        leaf._payload = under
        leaf._lazy = False
        leaf._clean = False
        return top

    def __getitem__(self, cls):
        cdef object layer = self
        while isinstance(layer, Layer):
            if isinstance(layer, cls):
                return layer
            layer = (<Layer>layer).get_payload()
        raise IndexError(f"Layer [{getattr(cls, '__name__', cls)}] not found")

    def __contains__(self, cls):
        cdef object layer = self
        while isinstance(layer, Layer):
            if isinstance(layer, cls):
                return True
            layer = (<Layer>layer).get_payload()
        return False

    def haslayer(self, cls):
        return cls in self

    def getlayer(self, cls):
        """The first layer of type cls, or None."""
        try:
            return self[cls]
        except IndexError:
            return None

    def layers(self):
        """The layer classes of the chain, outermost first."""
        out = []
        layer = self
        while isinstance(layer, Layer):
            out.append(type(layer))
            layer = (<Layer>layer).get_payload()
        return out

    def copy(self):
        """A deep copy of the layers (a final payload view still refers to the same bytes)."""
        return self.chain_copy()

    def __copy__(self):
        return self.chain_copy()

    def __deepcopy__(self, memo):
        return self.chain_copy()

    def verify(self):
        """Check every checksum of the packet; raise PacketError naming the first layer whose
        checksum does not match. Returns None."""
        self.assemble(True)

    def fields(self):
        """The header fields as a dict (None: computed by bytes())."""
        return dict(zip(type(self)._field_names, self.values()))

    def __eq__(self, other):
        if type(other) is not type(self):
            if isinstance(other, Layer):
                return False
            return NotImplemented
        if self.values() != (<Layer>other).values():
            return False
        if (self._trailer or EMPTY) != ((<Layer>other)._trailer or EMPTY):
            return False
        a = self.get_payload()
        b = (<Layer>other).get_payload()
        if isinstance(a, Layer) or isinstance(b, Layer):
            return a == b
        return (EMPTY if a is None else bytes(a)) == (EMPTY if b is None else bytes(b))

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None

    def __repr__(self):
        parts = []
        layer = self
        while isinstance(layer, Layer):
            items = ", ".join([f"{k}=0x{v:04x}" if k == "chksum" else f"{k}={v!r}"
                               for k, v in zip(type(layer)._field_names, (<Layer>layer).values())
                               if v is not None and not (k in ("options", "ext") and not v)])
            parts.append(f"{type(layer).__name__}({items})")
            layer = (<Layer>layer).get_payload()
        if layer is not None and buffer_size(layer):
            parts.append(repr(memoryview(layer).tobytes()))
        return " / ".join(parts)

    def __reduce__(self):
        return (parse, (self.tobytes(), type(self)._first))


cdef extern from *:
    Py_ssize_t LAYER_PAYLOAD "offsetof(struct csock_Layer, _payload)"

cdef Py_ssize_t _layer_slots[1]
_layer_slots[0] = LAYER_PAYLOAD
install_members(Layer, ("payload",), _layer_slots, True)


cdef int check_bytes_like(object value) except -1:
    if type(value) is bytes or isinstance(value, (bytearray, memoryview)):
        return 0
    if isinstance(value, str) or isinstance(value, int):
        raise TypeError(f"a payload must be bytes-like or a layer, not {type(value).__name__}")
    memoryview(value)   # TypeError if it has no buffer
    return 0


cdef int proto_of(object payload, bint v6) noexcept:
    """The IP protocol number of what an IP layer carries (IPv4 proto / IPv6 nh)."""
    cdef int kind
    if not isinstance(payload, Layer):
        return PROTO_NONE if v6 else PROTO_HOPOPT
    kind = (<Layer>payload)._kind
    if kind == K_UDP:
        return PROTO_UDP
    if kind == K_TCP:
        return PROTO_TCP
    if kind == K_ICMP:
        return PROTO_ICMP
    if kind == K_ICMPV6:
        return PROTO_ICMPV6
    if kind == K_IPV4:
        return PROTO_IPIP
    if kind == K_IPV6:
        return PROTO_IPV6
    return PROTO_NONE if v6 else PROTO_HOPOPT


cdef int checksum_error(str layer, uint16_t stored, uint16_t computed) except -1:
    raise PacketError(f"{layer} checksum 0x{stored:04x} does not match 0x{computed:04x}")


# --- parsing ---------------------------------------------------------------------------

cdef int set_lazy(Layer layer, object owner, Py_ssize_t start, Py_ssize_t end) except -1:
    """The payload is owner[start:end], taken as a view (no copy)."""
    layer._payload = payload_view(owner, start, end)
    layer._lazy = True
    layer._payload_start = start
    layer._payload_end = end
    return 0


cdef int parse_upper(Layer layer, int proto, object owner, const uint8_t *base,
                     Py_ssize_t start, Py_ssize_t end, int depth) except -1:
    """Parse what an IP layer carries (protocol number proto) into layer._payload."""
    cdef Layer child
    if proto == PROTO_UDP:
        child = parse_udp(owner, base, start, end)
    elif proto == PROTO_TCP:
        child = parse_tcp(owner, base, start, end)
    elif proto == PROTO_ICMP and layer._kind == K_IPV4:
        child = parse_icmp(owner, base, start, end, K_ICMP)
    elif proto == PROTO_ICMPV6:
        child = parse_icmp(owner, base, start, end, K_ICMPV6)
    elif proto == PROTO_IPIP and depth < MAX_DEPTH:
        child = parse_ipv4(owner, base, start, end, depth + 1)
    elif proto == PROTO_IPV6 and depth < MAX_DEPTH:
        child = parse_ipv6(owner, base, start, end, depth + 1)
    else:
        return set_lazy(layer, owner, start, end)
    layer._payload = child
    return 0


cdef Layer parse_first(object owner, const uint8_t *base, Py_ssize_t n, object first):
    cdef int v
    if first == "ipv4":
        return parse_ipv4(owner, base, 0, n, 0)
    if first == "ipv6":
        return parse_ipv6(owner, base, 0, n, 0)
    if first == "udp":
        return parse_udp(owner, base, 0, n)
    if first == "tcp":
        return parse_tcp(owner, base, 0, n)
    if first == "icmp":
        return parse_icmp(owner, base, 0, n, K_ICMP)
    if first == "icmpv6":
        return parse_icmp(owner, base, 0, n, K_ICMPV6)
    if first == "ip":
        if n < 1:
            raise PacketError("an IP packet needs at least 1 byte, got 0")
        v = base[0] >> 4
        if v == 4:
            return parse_ipv4(owner, base, 0, n, 0)
        if v == 6:
            return parse_ipv6(owner, base, 0, n, 0)
        raise PacketError(f"IP version {v} is neither 4 nor 6")
    if not isinstance(first, str):
        raise TypeError(f"first must be a str, not {type(first).__name__}")
    raise ValueError(f"first must be one of 'ipv4', 'ipv6', 'ip', 'udp', 'tcp', 'icmp', "
                     f"'icmpv6', got {first!r}")


def parse(data, first="ipv4", verify=False):
    """Parse packet bytes into layers (IPv4/IPv6 extension headers skipped, unknown upper
    protocols left as the payload). The final payload is a PayloadView (read-only,
    bytes-like, buffer protocol) into data, not a copy; ``bytes()`` of the result gives back
    exactly data. ``first`` names the outermost header ("ipv4", "ipv6", "ip" = by version
    nibble, "udp", "tcp", "icmp", "icmpv6"). Raises PacketError for truncated or
    inconsistent bytes, and with verify=True for a checksum that does not match."""
    cdef Layer top
    cdef Py_buffer *view
    cdef const uint8_t *start
    if type(data) is bytes:
        start = <const uint8_t *>PyBytes_AS_STRING(data)
        top = parse_first(data, start, PyBytes_GET_SIZE(data), first)
    else:
        if isinstance(data, str) or isinstance(data, int):
            raise TypeError(f"parse() wants bytes-like data, not {type(data).__name__}")
        owner = PyMemoryView_FromObject(data)
        view = PyMemoryView_GET_BUFFER(owner)
        if view.ndim != 1 or view.itemsize != 1 or (view.strides != NULL and view.strides[0] != 1):
            owner = (owner.cast("B") if owner.c_contiguous
                     else PyMemoryView_FromObject(owner.tobytes()))
        if not owner.readonly:
            owner = owner.toreadonly()
        view = PyMemoryView_GET_BUFFER(owner)
        start = <const uint8_t *>view.buf
        top = parse_first(owner, start, view.len, first)
    if verify:
        # the packet is what it was parsed from: check the checksums in place (its final
        # payload is a parsed view: nothing to export)
        top.measure(NULL)
        top.check_chain(start)
    return top


# --- RawSocket.send_packets ------------------------------------------------------------

cdef bint has_source(Layer ip):
    """Whether an IPv4/IPv6 layer's src is set (not 0.0.0.0 / ::, which RawSocket fills in
    from the route before the checksums are computed)."""
    cdef const uint8_t *src
    cdef Py_ssize_t i, n
    if type(ip) is IPv4:
        src, n = &(<IPv4>ip)._src[0], 4
    else:
        src, n = &(<IPv6>ip)._src[0], 16
    for i in range(n):
        if src[i]:
            return True
    return False


def packet_items(packets, address, bint header_included, fallback):
    """RawSocket.send_packets' (data, destination) pairs for send_batch. An IPv4/IPv6 layer
    sent with its header (IP_HDRINCL) is built here, bytes(layer) to (layer.dst, 0) or to
    address, with one destination tuple per distinct address; anything else goes through
    fallback(packet, address) (RawSocket._outgoing), which has the same rules."""
    cdef list items = []
    cdef dict destinations = {}
    if isinstance(address, str):
        address = (address, 0)
    for p in packets:
        if header_included and (type(p) is IPv4 or type(p) is IPv6) and has_source(p):
            destination = address
            if destination is None:
                dst = (<IPv4>p).dst if type(p) is IPv4 else (<IPv6>p).dst
                destination = destinations.get(dst)
                if destination is None:
                    destination = destinations[dst] = (dst, 0)
            items.append(((<Layer>p).tobytes(), destination))
        else:
            items.append(fallback(p, address))
    return items
