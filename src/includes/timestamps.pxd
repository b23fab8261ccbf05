# timestamps.h: SO_TIMESTAMP and SO_TIMESTAMPNS in both time formats (socket(7)), and the
# SO_TIMESTAMPING variant whose flags set the new format.
cdef extern from "timestamps.h" nogil:
    enum:
        SO_TIMESTAMP_OLD
        SO_TIMESTAMPNS_OLD
        SO_TIMESTAMP_NEW
        SO_TIMESTAMPNS_NEW
        SO_TIMESTAMPING_NEW
