# UDP GSO/GRO (man 7 udp: UDP_SEGMENT, UDP_GRO) and MSG_ZEROCOPY completions
# (Documentation/networking/msg_zerocopy.rst): constants and the error-queue record.
from libc.stdint cimport uint8_t, uint32_t


cdef extern from "offload.h" nogil:
    enum:
        SOL_UDP
        UDP_SEGMENT
        UDP_GRO
        SO_NO_CHECK
        IP_RECVERR
        IPV6_RECVERR
        SO_EE_ORIGIN_ZEROCOPY "CSOCK_SO_EE_ORIGIN_ZEROCOPY"
        SO_EE_CODE_ZEROCOPY_COPIED "CSOCK_SO_EE_CODE_ZEROCOPY_COPIED"

    ctypedef struct sock_extended_err "csock_sock_extended_err":
        uint32_t ee_errno
        uint8_t ee_origin
        uint8_t ee_type
        uint8_t ee_code
        uint8_t ee_pad
        uint32_t ee_info
        uint32_t ee_data
