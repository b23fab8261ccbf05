# spin.h: the calling thread's extra receive flags (MSG_DONTWAIT while spinning).
cdef extern from "spin.h" nogil:
    int csock_receive_flags
