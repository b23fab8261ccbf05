/* Extra recv flags for the calling thread: io_call sets MSG_DONTWAIT here while it spins on
 * a blocking socket (spin_us), so the receive wrappers poll by receiving. */
#ifndef CSOCK_SPIN_H
#define CSOCK_SPIN_H
static __thread int csock_receive_flags = 0;
#endif
