# Per-datagram metadata (enable_metadata): kernel timestamp, destination, interface, TOS.
from libc.errno cimport errno
from includes.socket cimport AF_INET6
from includes.socket cimport SOL_SOCKET, SO_TIMESTAMPNS
from includes.inet cimport (IPPROTO_IP, IPPROTO_IPV6, IP_PKTINFO, IP_RECVTOS, IPV6_RECVPKTINFO,
                            IPV6_RECVTCLASS)


def enable_metadata(sock, *, bint timestamp=False, bint destination=False, bint tos=False):
    """Have ``recv_batch`` fill in each Datagram's receive metadata (UDP).

    Parameters
    ----------
    timestamp : bool, optional
        ``Datagram.timestamp``: the kernel's receive time in seconds (``SO_TIMESTAMPNS``).
    destination : bool, optional
        ``Datagram.destination`` (local IP string) and ``.interface`` (index), from
        ``IP_PKTINFO`` / ``IPV6_RECVPKTINFO``.
    tos : bool, optional
        ``Datagram.tos``: TOS / traffic class, ECN in the low 2 bits (``IP_RECVTOS`` /
        ``IPV6_RECVTCLASS``).

    Raises
    ------
    OSError
        setsockopt(2) refused an option.

    Notes
    -----
    False turns one off. Each enabled field costs a control-message parse per datagram.
    """
    cdef IoWait w
    cdef int family = 0, kind = 0, mode
    io_begin(sock, &w)
    socket_family_type(sock, &family, &kind)
    if w.state == NULL:
        raise TypeError("enable_metadata needs a csock DatagramSocket")
    if not is_udp(family, kind, sock.proto):
        raise ValueError("enable_metadata is for UDP sockets (AF_INET, AF_INET6)")
    mode = rx_mode_of(&w)
    options = [(SOL_SOCKET, SO_TIMESTAMPNS, timestamp, RX_TIMESTAMP)]
    if family == AF_INET6:
        options += [(IPPROTO_IPV6, IPV6_RECVPKTINFO, destination, RX_DESTINATION),
                    (IPPROTO_IPV6, IPV6_RECVTCLASS, tos, RX_TOS)]
    else:
        options += [(IPPROTO_IP, IP_PKTINFO, destination, RX_DESTINATION),
                    (IPPROTO_IP, IP_RECVTOS, tos, RX_TOS)]
    for level, name, on, bit in options:
        if not set_int_option(w.fd, level, name, 1 if on else 0):
            raise_errno(errno)
        if family == AF_INET6 and bit != RX_TIMESTAMP:   # IPv4 traffic on a dual-stack socket
            set_int_option(w.fd, IPPROTO_IP, IP_PKTINFO if bit == RX_DESTINATION else IP_RECVTOS,
                           1 if on else 0)
        mode = (mode | bit) if on else (mode & ~bit)
    (<SocketState>w.state).rx_mode = mode
