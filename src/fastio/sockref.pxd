# sockref.pyx: SocketState (all csock keeps per socket) and the fd/timeout read. io_begin is
# public C API (csock/_fastio.pxd); io, stream, framing, zerocopy and the batch files reach a
# socket's state with existing_state / state_of, and io backs off held tries in HeldTryBackoff.
from libc.stdint cimport int64_t


cdef struct HeldTryBackoff:
    # A blocking call first tried with the GIL held that found nothing cost a wasted system
    # call: the next calls in that direction skip the try (see io.pyx, io_try_with_gil).
    unsigned char skip          # calls left to send straight to io_call
    unsigned char misses        # tries in a row that found nothing


cdef class SocketState:
    cdef int inflight           # csock system calls running on the fd now (changed with the GIL)
    cdef int closing            # close() ran while calls were in flight: they end with EBADF
    cdef int pending_fd         # the fd close() left for the last call in flight to close(2)
    cdef unsigned long pending_dev, pending_ino     # its file then (fstat: still_names_its_file)
    cdef int sleeping           # of those, the calls asleep in io_wait's poll (close() wakes them)
    cdef bint kernel_timeouts   # SO_RCVTIMEO/SO_SNDTIMEO set: blocking calls sleep in the call
    cdef unsigned long generation   # _fork_generation when inflight was last counted
    cdef int64_t spin_ns
    cdef HeldTryBackoff held_in, held_out
    cdef object zerocopy        # ZeroCopyState once send_buffers(zerocopy=True) ran
    # batches (mmsg): DatagramSocket, SeqPacketSocket, RawSocket
    cdef object receiver        # the BatchReceiver recv_batch keeps its memory in (None: none yet)
    cdef object send_error      # failed after part of a batch went out: the next send raises it
    cdef object recv_error      # failed after part of a batch came: the next batch receive gets it
    # datagrams taken from the kernel, not yet handed out (a split GRO message's past
    # max_messages, a batch an exception interrupted): the next recv_batch returns them first
    cdef list pending
    cdef int rx_mode            # RX_GRO, RX_TIMESTAMP, ... (offload.pyx); 0: plain recvmmsg
    cdef public bint gso_off    # the kernel refused UDP_SEGMENT once: send_batch sends plainly
    cdef public bint raw_direct     # made by RawSocket(family, proto), not the stdlib's arguments
    # SPP (SeqPacketSocket): its default header and record numbering
    cdef public object spp_default_header   # an SPPHeader, or None (all fields 0)
    cdef public unsigned int spp_next       # the sequence number the next record sent gets
    cdef public int spp_expected            # the number the next record received carries (-1: any)
    cdef object spp_send_turn               # the Turn record senders take (spp.pyx), or None
    cdef object spp_recv_turn               # the Turn record receivers take, or None
    cdef list loop_watches      # LoopWatch objects holding the fd for event loops, or None

    cdef inline int calls_in_flight(self) noexcept


cdef SocketState state_of(object sock)
# existing_state (sock's SocketState or None) stays an inline of sockref.pyx: declared here it
# would have to carry its body, which reads the module's slot offset.
