# The Internet checksum (RFC 1071): the 16-bit ones' complement of the ones' complement sum
# of the data taken as big-endian 16-bit words, an odd last byte padded with a zero byte.
#
# The sum is taken 64 bits at a time in host byte order with the carries folded back in
# (RFC 1071 section 2: the sum is independent of byte order, only the final result is
# swapped), then folded to 16 bits. Pieces can be summed one after another (pseudo-header,
# header, payload) as long as every piece but the last has an even length.
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from includes.byteorder cimport load_be16, store_be16


cdef inline uint64_t csum_add(uint64_t acc, const void *data, size_t n) noexcept nogil:
    """acc plus the ones' complement sum of n bytes (host order, carries folded in)."""
    cdef const uint8_t *p = <const uint8_t *>data
    cdef uint64_t w = 0
    cdef uint32_t w4 = 0
    cdef uint16_t w2 = 0
    while n >= 32:
        memcpy(&w, p, 8)
        acc += w
        acc += (acc < w)
        memcpy(&w, p + 8, 8)
        acc += w
        acc += (acc < w)
        memcpy(&w, p + 16, 8)
        acc += w
        acc += (acc < w)
        memcpy(&w, p + 24, 8)
        acc += w
        acc += (acc < w)
        p += 32
        n -= 32
    while n >= 8:
        memcpy(&w, p, 8)
        acc += w
        acc += (acc < w)
        p += 8
        n -= 8
    if n >= 4:
        memcpy(&w4, p, 4)
        acc += w4
        acc += (acc < w4)
        p += 4
        n -= 4
    if n >= 2:
        memcpy(&w2, p, 2)
        acc += w2
        acc += (acc < w2)
        p += 2
        n -= 2
    if n:
        # the odd byte is the first byte of a zero-padded word: in memory order [b, 0]
        w2 = 0
        memcpy(&w2, p, 1)
        acc += w2
        acc += (acc < w2)
    return acc


cdef inline uint16_t csum_finish(uint64_t acc) noexcept nogil:
    """The checksum field value (as load_be16 would read it) for a running sum."""
    cdef uint16_t folded
    cdef uint8_t raw[2]
    acc = (acc & 0xFFFFFFFFu) + (acc >> 32)
    acc = (acc & 0xFFFFFFFFu) + (acc >> 32)
    acc = (acc & 0xFFFFu) + (acc >> 16)
    acc = (acc & 0xFFFFu) + (acc >> 16)
    folded = <uint16_t>(~acc)
    memcpy(raw, &folded, 2)   # host-order sum -> network-order bytes
    return load_be16(raw)


cdef inline uint64_t pseudo_v4(const uint8_t *src, const uint8_t *dst, int proto,
                               Py_ssize_t length) noexcept nogil:
    """Sum of the IPv4 pseudo-header (RFC 768/793): src, dst, zero, protocol, length."""
    cdef uint8_t ph[12]
    memcpy(ph, src, 4)
    memcpy(ph + 4, dst, 4)
    ph[8] = 0
    ph[9] = <uint8_t>proto
    store_be16(ph + 10, <uint16_t>length)
    return csum_add(0, ph, 12)


cdef inline uint64_t pseudo_v6(const uint8_t *src, const uint8_t *dst, int nh,
                               Py_ssize_t length) noexcept nogil:
    """Sum of the IPv6 pseudo-header (RFC 8200 8.1): src, dst, 32-bit length, zeros, nh."""
    cdef uint8_t ph[40]
    memcpy(ph, src, 16)
    memcpy(ph + 16, dst, 16)
    ph[32] = <uint8_t>(length >> 24)
    ph[33] = <uint8_t>(length >> 16)
    ph[34] = <uint8_t>(length >> 8)
    ph[35] = <uint8_t>length
    ph[36] = 0
    ph[37] = 0
    ph[38] = 0
    ph[39] = <uint8_t>nh
    return csum_add(0, ph, 40)


def checksum(data):
    """The Internet checksum (RFC 1071) of a bytes-like object, as the 16-bit value to store
    big-endian in a header's checksum field (0 when data already holds a correct one)."""
    cdef Py_buffer view
    cdef uint64_t acc
    if type(data) is bytes:
        return csum_finish(csum_add(0, <const char *>data, len(<bytes>data)))
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        acc = csum_add(0, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return csum_finish(acc)
