# Python addresses <-> struct sockaddr, as the stdlib's socket module reads and writes them:
# AF_INET (host, port); AF_INET6 (host, port[, flowinfo[, scope_id]]); AF_UNIX a path (str, or
# bytes; a leading NUL makes it abstract); AF_PACKET (ifname, proto[, pkttype[, hatype[,
# addr]]]); AF_NETLINK (pid, groups). Numeric hosts are parsed with inet_pton(3); names
# go through getaddrinfo(3) (socket.gaierror when they don't resolve), as in the stdlib.
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.long cimport PyLong_CheckExact, PyLong_AsUnsignedLongMask
from cpython.number cimport PyNumber_Index
from includes.pyapi cimport PyUnicode_DecodeFSDefaultAndSize
from libc.errno cimport ENAMETOOLONG as errno_ENAMETOOLONG
from libc.stdint cimport uint32_t
from libc.string cimport memcpy, memset, memcmp
from includes.socket cimport (sockaddr, sockaddr_storage, socklen_t, AF_UNIX, AF_INET, AF_INET6,
                              AF_NETLINK, AF_PACKET, SOCK_DGRAM)
from includes.inet cimport (sockaddr_in, sockaddr_in6, sockaddr_un, htons, ntohs, htonl, ntohl,
                            inet_pton, inet_ntop, INET6_ADDRSTRLEN, sockaddr_ll, sockaddr_nl,
                            IF_NAMESIZE, if_nametoindex, if_indextoname, ifreq, ioctl,
                            SIOCGIFINDEX, SIOCGIFNAME)
from libc.errno cimport errno
import os as _os

cdef enum:
    SUN_PATH_OFFSET = 2                # offsetof(struct sockaddr_un, sun_path)
    SUN_PATH_MAX = 108


# The stdlib reads an address tuple's fields first (host, then "i" port, then "I" flowinfo and
# scope_id: type errors), then resolves the host (gaierror), then checks the ranges
# (OverflowError); csock raises in that order too, for an address with several faults.

cdef int port_index(object port) except? -1:
    """The port as the stdlib's "i" reads it: an __index__ integer (TypeError otherwise) that
    fits a C int; its 0-65535 range is checked after the host (check_port)."""
    if not PyLong_CheckExact(port):
        port = PyNumber_Index(port)
    try:
        return port
    except OverflowError:
        raise OverflowError("port must be 0-65535.") from None


cdef int check_port(int port) except -1:
    if port < 0 or port > 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    return 0


cdef uint32_t uint32_field(object value) except? 0xFFFFFFFF:
    """flowinfo or scope_id as the stdlib's "I" reads it: an __index__ integer (a float is
    TypeError, not truncated) wrapped modulo 2**32, as PyLong_AsUnsignedLongMask does."""
    return <uint32_t>PyLong_AsUnsignedLongMask(PyNumber_Index(value))


cdef bytes host_bytes(object host):
    """The host's bytes as the stdlib's idna_converter makes them: a str of ASCII as it is
    (other str through the idna codec), bytes or bytearray as given. A NUL is refused: the
    name is a C string from here on, and would be cut there."""
    cdef bytes name
    if type(host) is str and (<str>host).isascii():
        name = (<str>host).encode("ascii")
    elif isinstance(host, str):
        try:
            name = (<str>host).encode("idna")
        except UnicodeError:
            raise TypeError("encoding of hostname failed") from None
    elif isinstance(host, (bytes, bytearray)):
        name = bytes(host)
    else:
        raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
    if b"\0" in name:
        raise TypeError("host name must not contain null character")
    return name


cdef int resolve(bytes host, int family, void *out) except -1:
    """Fill out's address (in_addr or in6_addr) for host: numeric, special, or a name."""
    if host == b"" and family == AF_INET:
        memset(out, 0, 4)                  # INADDR_ANY
        return 0
    if host == b"<broadcast>":
        if family != AF_INET:
            raise OSError("address family mismatched")      # (the stdlib's setipaddr)
        memset(out, 0xFF, 4)
        return 0
    if host == b"" and family == AF_INET6:
        memset(out, 0, 16)
        return 0
    if inet_pton(family, host, out) == 1:
        return 0
    infos = _socket.getaddrinfo(host, None, family, SOCK_DGRAM)    # (bytes: as host_bytes made it)
    if not infos:
        raise _socket.gaierror("no address for " + host.decode("ascii", "replace"))
    numeric = infos[0][4][0].encode()
    if inet_pton(family, numeric.split(b"%")[0], out) != 1:
        raise ValueError(f"getaddrinfo gave an unusable address {numeric!r}")
    return 0


cdef socklen_t sockaddr_from_python(object address, int family, sockaddr_storage *out,
                                    int fd=-1) except 0:
    """Fill out from a Python address of the socket's family; returns the sockaddr length.
    fd: the socket's, whose network namespace an AF_PACKET interface name is looked up in."""
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    cdef int port
    cdef uint32_t flowinfo
    memset(out, 0, sizeof(sockaddr_storage))
    if family == AF_INET:
        if not isinstance(address, tuple):
            raise TypeError(f"AF_INET address must be tuple, not {type(address).__name__}")
        if len(address) != 2:
            raise TypeError("AF_INET address must be a pair (host, port)")
        host = host_bytes(address[0])
        port = port_index(address[1])
        v4 = <sockaddr_in *>out
        v4.sin_family = AF_INET
        resolve(host, AF_INET, &v4.sin_addr)
        check_port(port)
        v4.sin_port = htons(port)
        return sizeof(sockaddr_in)
    if family == AF_INET6:
        if not isinstance(address, tuple):
            raise TypeError(f"AF_INET6 address must be tuple, not {type(address).__name__}")
        if not 2 <= len(address) <= 4:
            raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
        host = host_bytes(address[0])
        port = port_index(address[1])
        flowinfo = uint32_field(address[2]) if len(address) > 2 else 0
        v6 = <sockaddr_in6 *>out
        v6.sin6_family = AF_INET6
        v6.sin6_scope_id = uint32_field(address[3]) if len(address) > 3 else 0
        if b"%" in host:
            # fe80::1%eth0: the name gives the address; the scope_id stays the tuple's, as
            # the stdlib's getsockaddrarg sets it after resolving the name
            info = _socket.getaddrinfo(host, None, AF_INET6, SOCK_DGRAM)[0][4]
            host = info[0].split("%")[0].encode()
        resolve(host, AF_INET6, &v6.sin6_addr)
        check_port(port)
        v6.sin6_port = htons(port)
        if flowinfo > 0xFFFFF:
            raise OverflowError("flowinfo must be 0-1048575.")
        v6.sin6_flowinfo = htonl(flowinfo)
        return sizeof(sockaddr_in6)
    if family == AF_UNIX:
        if isinstance(address, str):
            address = _os.fsencode(address)
        return sockaddr_un_from(address, <sockaddr_un *>out)    # (any bytes-like path)
    if family == AF_PACKET:
        return sockaddr_ll_from(address, <sockaddr_ll *>out, fd)
    if family == AF_NETLINK:
        if not isinstance(address, tuple):
            raise TypeError(f"AF_NETLINK address must be tuple, not {type(address).__name__}")
        if len(address) != 2:
            raise TypeError("AF_NETLINK address must be a pair (pid, groups)")
        (<sockaddr_nl *>out).nl_family = AF_NETLINK
        (<sockaddr_nl *>out).nl_pid = uint32_field(address[0])
        (<sockaddr_nl *>out).nl_groups = uint32_field(address[1])
        return sizeof(sockaddr_nl)
    raise ValueError(f"csock batches support AF_INET, AF_INET6, AF_UNIX, AF_PACKET and"
                     f" AF_NETLINK addresses, not family {family}")


cdef socklen_t sockaddr_ll_from(object address, sockaddr_ll *ll, int fd) except 0:
    """Fill ll from (ifname, proto[, pkttype[, hatype[, addr]]]), checked as the stdlib's
    getsockaddrarg checks it (pkttype and hatype are truncated to their fields, as there)."""
    cdef int proto, pkttype = 0, hatype = 0
    cdef unsigned int index
    cdef bytes name
    cdef Py_buffer hardware
    if not isinstance(address, tuple):
        raise TypeError(f"AF_PACKET address must be tuple, not {type(address).__name__}")
    if not 2 <= len(address) <= 5 or not isinstance(address[0], str):
        raise TypeError("AF_PACKET address must be a tuple of two to five elements")
    name = (<str>address[0]).encode("utf-8")
    if b"\0" in name:
        raise ValueError("embedded null character")
    proto = address_int(address[1])
    if len(address) > 2:
        pkttype = address_int(address[2])
    if len(address) > 3:
        hatype = address_int(address[3])
    PyObject_GetBuffer(address[4] if len(address) > 4 else b"", &hardware, PyBUF_SIMPLE)
    try:
        index = interface_index(name, fd)
        if hardware.len > 8:
            raise ValueError("Hardware address must be 8 bytes or less")
        if proto < 0 or proto > 0xFFFF:
            raise OverflowError("proto must be 0-65535.")
        ll.sll_family = AF_PACKET
        ll.sll_protocol = htons(<unsigned short>proto)
        ll.sll_ifindex = <int>index
        ll.sll_pkttype = <unsigned char>pkttype
        ll.sll_hatype = <unsigned short>hatype
        memcpy(ll.sll_addr, hardware.buf, hardware.len)
        ll.sll_halen = <unsigned char>hardware.len
    finally:
        PyBuffer_Release(&hardware)
    return sizeof(sockaddr_ll)


cdef unsigned int interface_index(bytes name, int fd) except 0:
    """name's index in the socket's network namespace, as the stdlib asks (SIOCGIFINDEX on
    the socket: a thread may have moved to another namespace since it was made), or in the
    calling thread's without a socket. OSError (ENODEV) for no such interface."""
    cdef ifreq request
    cdef unsigned int index
    if fd < 0:
        index = if_nametoindex(name[:IF_NAMESIZE - 1])
        if index == 0:
            raise_errno(errno)
        return index
    memset(&request, 0, sizeof(request))
    memcpy(request.ifr_name, <const char *>name, min(len(name), IF_NAMESIZE - 1))
    if ioctl(fd, SIOCGIFINDEX, &request) < 0:
        raise_errno(errno)
    return <unsigned int>request.ifr_ifindex


cdef str interface_name(int index, int fd):
    """The name of interface index now, in the socket's network namespace (SIOCGIFNAME on it,
    as the stdlib), or the calling thread's without a socket; "" when there is none."""
    cdef ifreq request
    cdef char name[IF_NAMESIZE]
    if fd >= 0:
        memset(&request, 0, sizeof(request))
        request.ifr_ifindex = index
        if ioctl(fd, SIOCGIFNAME, &request) < 0:
            return ""
        return request.ifr_name[:strlen_bounded(request.ifr_name, IF_NAMESIZE)].decode(
            "utf-8", "surrogateescape")
    if if_indextoname(<unsigned int>index, name) == NULL:
        return ""
    return name.decode("utf-8", "surrogateescape")


cdef int address_int(object value) except? -1:
    """An address field as the stdlib's "i" reads it: an __index__ integer that fits a C int."""
    value = PyNumber_Index(value)
    if not -2**31 <= value < 2**31:
        raise OverflowError("address argument out of range")
    return value


cdef socklen_t sockaddr_un_from(object path, sockaddr_un *un) except 0:
    """Fill un from a bytes-like path: one contiguous run of bytes (BufferError for a strided
    view, as the stdlib's sendto), at most 108 bytes."""
    cdef Py_buffer view
    cdef Py_ssize_t n
    cdef const char *name
    PyObject_GetBuffer(path, &view, PyBUF_SIMPLE)
    try:
        n = view.len
        name = <const char *>view.buf
        if n > SUN_PATH_MAX or (n == SUN_PATH_MAX and name[0] != 0):
            raise OSError(errno_ENAMETOOLONG, "AF_UNIX path too long")
        un.sun_family = AF_UNIX
        if n:
            memcpy(un.sun_path, name, n)
        # A pathname is NUL-terminated and its length counts the NUL; an abstract name (leading
        # NUL) is exactly its bytes (unix(7)).
        return SUN_PATH_OFFSET + n + (1 if n and name[0] != 0 else 0)
    finally:
        PyBuffer_Release(&view)


cdef object sockaddr_to_python(const sockaddr *sa, socklen_t length, int fd=-1):
    """The stdlib's Python form of a received address (None for an unnamed AF_UNIX peer);
    fd: the socket's, in whose network namespace an AF_PACKET interface is named."""
    cdef char text[INET6_ADDRSTRLEN]
    cdef const sockaddr_in *v4
    cdef const sockaddr_in6 *v6
    cdef const sockaddr_un *un
    cdef Py_ssize_t n
    if length == 0:
        return None
    if sa.sa_family == AF_INET:
        v4 = <const sockaddr_in *>sa
        inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(v4.sin_port))
    if sa.sa_family == AF_INET6:
        v6 = <const sockaddr_in6 *>sa
        inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo),
                v6.sin6_scope_id)
    if sa.sa_family == AF_UNIX:
        un = <const sockaddr_un *>sa
        n = <Py_ssize_t>length - SUN_PATH_OFFSET
        if n <= 0:
            return None                     # unnamed (socketpair, unbound sender)
        if un.sun_path[0] == 0:
            return PyBytes_FromStringAndSize(un.sun_path, n)       # abstract: bytes, NUL first
        # (in C, as the stdlib: os.fsdecode, Python code, would run signal handlers mid-batch)
        return PyUnicode_DecodeFSDefaultAndSize(un.sun_path, strlen_bounded(un.sun_path, n))
    if sa.sa_family == AF_PACKET and length >= sizeof(sockaddr_ll):
        return sockaddr_ll_to_python(<const sockaddr_ll *>sa, length, fd)
    if sa.sa_family == AF_NETLINK and length >= sizeof(sockaddr_nl):
        return ((<const sockaddr_nl *>sa).nl_pid, (<const sockaddr_nl *>sa).nl_groups)
    return (sa.sa_family, PyBytes_FromStringAndSize(<const char *>sa, length))


cdef object sockaddr_ll_to_python(const sockaddr_ll *ll, socklen_t length, int fd):
    """(ifname, proto, pkttype, hatype, addr), as the stdlib's makesockaddr: the interface's
    name now ("" when it is gone), and the hardware address's sll_halen bytes (a device's
    longer than 8 run on past sll_addr, within the length the kernel gave)."""
    cdef Py_ssize_t room = <Py_ssize_t>length - (<Py_ssize_t>&ll.sll_addr[0] - <Py_ssize_t>ll)
    ifname = interface_name(ll.sll_ifindex, fd) if ll.sll_ifindex else ""
    hardware = PyBytes_FromStringAndSize(<const char *>ll.sll_addr,
                                         min(<Py_ssize_t>ll.sll_halen, room))
    return (ifname, ntohs(ll.sll_protocol), ll.sll_pkttype, ll.sll_hatype, hardware)


cdef inline Py_ssize_t strlen_bounded(const char *s, Py_ssize_t limit) noexcept:
    cdef Py_ssize_t i = 0
    while i < limit and s[i] != 0:
        i += 1
    return i


cdef class AddressCache:
    """Decodes received sockaddrs, handing back the same Python object for a repeat of the
    previous sender (a batch usually comes from a few peers). Fields: address.pxd."""

    def __cinit__(self):
        self.last_length = 0
        self.last_address = None
        self.fd = -1

    cdef object decode(self, const sockaddr *sa, socklen_t length):
        if length == self.last_length and self.last_address is not None and \
                memcmp(sa, &self.last, length) == 0:
            return self.last_address
        address = sockaddr_to_python(sa, length, self.fd)
        # (an AF_PACKET sender is named by its interface's name now, as each of the stdlib's
        # recvfrom names it: never from an earlier batch)
        if length <= sizeof(sockaddr_storage) and not (length and sa.sa_family == AF_PACKET):
            memcpy(&self.last, sa, length)
            self.last_length = length
            self.last_address = address
        return address


def parse_address(family, address):
    """The sockaddr bytes csock sends to for a Python address (for tests and debugging)."""
    cdef sockaddr_storage storage
    cdef socklen_t n = sockaddr_from_python(address, family, &storage)
    return PyBytes_FromStringAndSize(<char *>&storage, n)
