/* Extra flags for the calling thread's next system calls: io.pyx sets MSG_DONTWAIT here while
 * it spins on a blocking socket (spin_us: the receive wrappers poll by receiving) and while
 * it tries a call with the GIL held (io_try_with_gil). */
#ifndef CSOCK_SPIN_H
#define CSOCK_SPIN_H
static __thread int csock_extra_flags = 0;
#endif
