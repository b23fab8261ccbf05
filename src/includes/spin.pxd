# spin.h: the calling thread's extra flags for its next system calls (MSG_DONTWAIT).
cdef extern from "spin.h" nogil:
    int csock_extra_flags
