# spp.pyx: SPPHeader, the Xerox NS SPP record header. Included last, it offers the other core
# files nothing today; these are what send_records / recv_records build on: the header's
# fields, write (the 12 bytes in network order) and header_from (the reverse).

cdef enum:
    SPP_HEADER_SIZE = 12


cdef class SPPHeader:
    cdef int _connection_control, _datastream_type, _source, _destination
    cdef int _acknowledge, _allocation
    cdef object _sequence

    cdef void write(self, char *out, int sequence) noexcept


cdef SPPHeader header_from(const char *raw)
cdef int checked(str name, object value, int limit) except -1
