"""csock.uring: io_uring for sockets, one kernel entry for many of them.

A :class:`Ring` is one io_uring instance (csock._uring, over the raw kernel ABI: no liburing).
Requests on any number of sockets are queued in its submission queue and handed to the
kernel with one ``io_uring_enter(2)``; their results come back as :class:`Completion` objects.
Receives land in the ring's provided buffers and are returned as :class:`ReceivedView`
objects (``csock.MessageView`` objects), which give their buffer back to the kernel when
released.

``available()`` says whether this kernel lets the process use io_uring at all (it can be
missing, disabled by ``kernel.io_uring_disabled`` or refused by a seccomp filter, and
``CSOCK_URING=0`` in the environment refuses it the same way); a Ring made where it is not
raises OSError. ``Ring.supported_ops()`` says which operations this kernel has
(probed with IORING_REGISTER_PROBE): an operation it lacks raises OSError(ENOSYS).

After ``fork()`` a Ring made in the parent refuses every call in the child (the rings are
shared memory with the parent's kernel instance); :func:`default_ring` makes the child its own.
"""
from __future__ import annotations

import _socket
import os
import threading
from collections.abc import Iterable
from typing import Any

from ._base import _gro_is_set
from ._base import socket as _csock_socket
from ._fastio import Datagram, parse_address, recv_batch
from ._uring import (
    RECVMSG_HEADROOM,
    BufferPool,
    Completion,
    ReceivedView,
    Request,
    Ring,
    check_datagram_sockets,
    kernel_features,
    settle_errors,
)

__all__ = [
    "DATAGRAM_ROOM", "RECVMSG_HEADROOM", "BufferPool", "Completion", "ReceivedView", "Request",
    "Ring", "available", "default_ring", "kernel_features", "recv_many", "send_many",
]

_lock = threading.Lock()
_default: Ring | None = None
_default_pid = 0
_available: bool | None = None
_available_pid = 0
_fallback_forced = False        # tests: take the plain-socket path as if io_uring were missing
# The most of a datagram recv_many returns, on either path: the fallback's recv_batch
# bufsize, and what each of the default ring's buffers holds after the recvmsg header and the
# address.
DATAGRAM_ROOM = 65536
_DRAIN_BATCH = 64


def _new_lock_in_child() -> None:
    # A thread of the parent's may have held the lock at fork(): the child's copy would stay
    # held for ever (the child makes its own default ring).
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def available() -> bool:
    """Whether io_uring can be used here (a ring can be set up), checked once per process."""
    global _available, _available_pid
    if _available is None or _available_pid != os.getpid():
        try:
            Ring(8, 0).close()
            _available = True
        except OSError:
            _available = False
        _available_pid = os.getpid()
    return _available


def default_ring() -> Ring:
    """This process's shared Ring (256 entries, 256 buffers, each holding a datagram of 64 KiB
    after its recvmsg header), made on first use and made anew in a forked child. Raises
    OSError when io_uring is unavailable."""
    global _default, _default_pid
    with _lock:
        if _default is None or _default_pid != os.getpid() or _default.closed:
            _default = Ring(256, 256, DATAGRAM_ROOM + RECVMSG_HEADROOM)
            _default_pid = os.getpid()
        return _default


def _ring_with(op: str) -> Ring | None:
    """The default ring if io_uring is here and has op, else None (the fallback, also where
    the ring cannot be made now: no fd or memory left for it)."""
    if _fallback_forced or not available():
        return None
    try:
        ring = default_ring()
    except OSError:
        return None
    return ring if op in ring.supported_ops() else None


def recv_many(sockets: Iterable[Any]) -> list[list[Datagram]]:
    """What each datagram socket has queued now, as one list of :class:`csock.Datagram` per
    socket (``data, address = datagram``; ``truncated`` when its buffer cut it), with one
    ``io_uring_enter`` for all of them (:meth:`Ring.recv_many` on the default ring: data is
    a ReceivedView). Where io_uring or its multishot recvmsg is missing, each socket is
    drained in turn with ``recv_batch(wait=False)`` (data is a MessageView): same result.
    A socket's error costs no datagram the call took: when any came, it is raised by the next
    batch receive on the socket (recv_many naming it, or a csock socket's recv_batch). A socket
    named twice is a ValueError."""
    ring = _ring_with("recvmsg")
    if ring is not None:
        return ring.recv_many(sockets)
    socks = tuple(sockets)
    check_datagram_sockets(socks)   # as the ring checks them: before any datagram is taken
    failures: list[tuple[Any, OSError]] = []
    return settle_errors([_drain(sock, failures) for sock in socks], failures)


def _drain(sock: Any, failures: list[tuple[Any, OSError]]) -> list[Datagram]:
    if isinstance(sock, _csock_socket) or not _gro_is_set(sock):
        return _drain_from(sock, sock, failures)
    # recv_batch splits what UDP_GRO coalesced only on a csock socket (whose state keeps the
    # GRO mode and a message's rest): a stdlib socket's is drained through one on a dup.
    fd = os.dup(sock.fileno())
    blocking = os.get_blocking(fd)
    try:
        twin = _csock_socket(fileno=fd)
    except BaseException:
        os.close(fd)
        raise
    with twin:
        # A default timeout made the file non-blocking, and the caller's socket shares it.
        # (recv_batch(wait=False) takes no heed of the mode.)
        os.set_blocking(fd, blocking)
        return _drain_from(twin, sock, failures)


def _drain_from(source: Any, sock: Any, failures: list[tuple[Any, OSError]]) -> list[Datagram]:
    # recv_batch(wait=False): recvmmsg with MSG_DONTWAIT, whatever the socket's timeout;
    # 64 at a time, since its receive memory is laid out for that many of 64 KiB. (A batch
    # under 64 leaves no rest of a coalesced message behind in source.)
    got: list[Datagram] = []
    while True:
        try:
            batch = recv_batch(source, _DRAIN_BATCH, DATAGRAM_ROOM, wait=False)
        except BlockingIOError:
            return got
        except OSError as error:    # (what came before it is returned: settle_errors)
            failures.append((sock, error))
            return got
        got += batch
        if len(batch) < _DRAIN_BATCH:
            return got


def send_many(pairs: Iterable[tuple[Any, ...]]) -> list[int]:
    """Send every (sock, data) or (sock, data, address), with one ``io_uring_enter`` for all
    of them, and return the byte counts (:meth:`Ring.send_many` on the default ring). Where
    io_uring is missing, each is sent in turn (``sendall`` or ``sendto``): same result. A send
    that fails raises, with ``counts`` on the error: each item's byte count, None if it was
    not sent (or, without io_uring, not wholly: sendall does not say how much went). On the
    ring a datagram socket with no room raises BlockingIOError at once (Ring.send: datagram
    sends do not wait), where the fallback's sendto on a blocking socket waits."""
    ring = _ring_with("sendmsg")
    if ring is not None:
        return ring.send_many(pairs)
    items = tuple([tuple(item) for item in pairs])     # (as Ring.send_many takes them)
    for item in items:              # as the ring checks them: before anything is sent
        _check_send_item(item)
    counts: list[int | None] = [None] * len(items)
    try:
        for i, item in enumerate(items):
            if len(item) == 3 and item[2] is not None:
                counts[i] = item[0].sendto(item[1], item[2])
            else:
                item[0].sendall(item[1])
                counts[i] = memoryview(item[1]).nbytes
    except OSError as error:
        error.counts = counts       # type: ignore[attr-defined]   # as Ring.send_many's
        raise
    return counts  # type: ignore[return-value]   # (every item sent: no None left)


def _check_send_item(item: tuple[Any, ...]) -> None:
    """The ValueError or TypeError Ring.send_many raises for a bad item, if it is one."""
    if len(item) not in (2, 3):
        raise ValueError("send_many takes (sock, data) or (sock, data, address) items")
    if not isinstance(item[0], _socket.socket):     # (the C class, as the ring's check)
        raise TypeError(f"expected a socket object, not {type(item[0]).__name__}")
    memoryview(item[1]).release()
    if len(item) == 3 and item[2] is not None:
        parse_address(item[0].family, item[2])
