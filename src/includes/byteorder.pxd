# Network byte order loads and stores at any alignment (byteorder.h).
from libc.stdint cimport uint16_t, uint32_t


cdef extern from "byteorder.h" nogil:
    uint16_t load_be16 "csock_load_be16"(const void *p)
    uint32_t load_be32 "csock_load_be32"(const void *p)
    void store_be16 "csock_store_be16"(void *p, uint16_t v)
    void store_be32 "csock_store_be32"(void *p, uint32_t v)
