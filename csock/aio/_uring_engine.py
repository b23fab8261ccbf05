"""The io_uring engine of csock.aio: one Ring per running loop, inside that loop.

Every request a FramedStream, a datagram endpoint or a framed server makes on the engine goes
into the loop's Ring and is not handed to the kernel at once: the first request of a loop
iteration schedules one ``submit`` (``loop.call_soon``), so the sends and re-arms of a whole
iteration reach the kernel with one ``io_uring_enter(2)``. The kernel posts completions to
the ring's CQ; the ring's fd, registered with ``loop.add_reader``, becomes readable, and one
callback reaps every completion and calls each request's handler in the order the kernel
posted them. Nothing here blocks: the ring is only ever entered without waiting.

The ring closes with its loop: ``loop.close()`` (which ``asyncio.run`` and ``uvloop.run``
call) first closes the loop's ring, cancelling the requests of streams never closed, so that
their sockets' holds are given back (a socket closed afterwards closes at once, and its peer
sees end of stream) and no multishot receive is left to take bytes nobody reaps.

A driver belongs to one loop in one process: a forked child (whose Ring copy refuses every
call) makes its own the first time its loop asks. ``engine="auto"`` takes this path where
:func:`usable` says io_uring and every operation the engine needs are here, and the readiness
path (epoll) otherwise.
"""
from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Callable

from .. import uring as _uring
from .._uring import Completion, Request, Ring

__all__ = ["ENGINES", "UringDriver", "driver_for", "resolve_engine", "usable"]

logger = logging.getLogger("csock.aio")

ENGINES = ("epoll", "uring", "auto")
# The operations FramedStream, the framed server and the datagram endpoint use.
NEEDED_OPS = frozenset({"recv", "send", "sendmsg", "accept", "poll"})
# Per loop: SQ entries (the CQ has twice as many; a full one waits in the kernel, FEAT_NODROP)
# and the provided buffers receives land in. A view is fed to its stream and released within
# the completion's callback, so buffers are held only between a reap and its dispatch; but
# each stream that receives between two reaps takes one, so there must be a buffer for each
# (with 512, a server of 1,000 busy connections re-armed hundreds of receives every round
# after ENOBUFS). Only the buffers offered are touched (BufferPool: 2 MiB at first, doubled
# once per reap that met ENOBUFS): a 64-byte message dirties one page of its 32 KiB buffer.
RING_ENTRIES = 1024
RING_BUFFERS = 4096
RING_BUFFER_SIZE = 32 * 1024

Handler = Callable[[Completion], None]

_drivers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, UringDriver] = \
    weakref.WeakKeyDictionary()
_usable: tuple[int, bool] | None = None           # (pid, answer)


def usable() -> bool:
    """Whether this process can run the engine: io_uring set up (``csock.uring.available()``,
    asked each time, so that what it says is heard), and every operation the engine needs in
    this kernel's probe (probed once per process)."""
    global _usable
    if _uring._fallback_forced or not _uring.available():
        return False
    if _usable is None or _usable[0] != os.getpid():
        try:
            # As many entries and buffers as a loop's ring has: before 5.12 the rings' memory
            # counts against RLIMIT_MEMLOCK, and a ring that cannot be made must mean "epoll".
            # (Small buffers: their size is only our own mmap.)
            with Ring(RING_ENTRIES, RING_BUFFERS, 64) as ring:
                answer = NEEDED_OPS <= ring.supported_ops()
        except OSError:
            answer = False
        _usable = (os.getpid(), answer)
    return _usable[1]


def resolve_engine(engine: str, loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """True for the io_uring engine, False for the readiness one: "epoll" never uses io_uring,
    "uring" must (OSError where it cannot), "auto" uses it where :func:`usable`. Given the
    loop, its ring is made now: where it cannot be (no fd or memory left for it), "auto"
    means epoll, which needs neither, and "uring" raises that OSError."""
    if engine == "epoll":
        return False
    if engine == "auto":
        return usable() and (loop is None or _ring_made(loop))
    if engine == "uring":
        if not usable():
            raise OSError("engine='uring': io_uring, or an operation csock.aio needs "
                          f"({', '.join(sorted(NEEDED_OPS))}), is not available here")
        if loop is not None:
            driver_for(loop)
        return True
    raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")


def _ring_made(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        driver_for(loop)
    except OSError as error:
        logger.debug("csock.aio: no io_uring ring for this loop (%s): serving on epoll", error)
        return False
    return True


def driver_for(loop: asyncio.AbstractEventLoop) -> UringDriver:
    """The loop's driver, made on first use (and made anew in a forked child)."""
    driver = _drivers.get(loop)
    if driver is None or driver.pid != os.getpid() or driver.ring.closed:
        driver = _drivers[loop] = UringDriver(loop)
        # Made for a user about to acquire it; if none does (a stream refused after its engine
        # was chosen, a server whose bind failed), _submit closes it at this iteration's end.
        driver.submit_soon()
    return driver


class _Handlers(dict):  # type: ignore[type-arg]
    """Request -> its handler, for Ring.run_callbacks. Only the loop holds it (its reader's
    arguments); the driver, which _drivers and the finalizer keep, refers to it weakly."""

    __slots__ = ("__weakref__",)


class UringDriver:
    """One loop's Ring, its fd watched by the loop, and the handler of each pending request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: _drivers is keyed weakly by the loop, and a strong reference from its value
        # would keep the loop, and this ring, alive for ever.
        self._loop_ref = weakref.ref(loop)
        self.ring = Ring(RING_ENTRIES, RING_BUFFERS, RING_BUFFER_SIZE)
        # A loop dropped unclosed: when the GC collects it, its streams' requests are cancelled
        # and the fd closed. Nothing that outlives the loop (this driver, held by _drivers;
        # the ring, held by this finalizer; its requests, held by their sockets' close hook)
        # may refer to a handler, which refers to its stream, so to the loop: the handlers
        # are in a dict only the loop's reader holds, a cycle through the loop the GC sees.
        # (_close_ring_with is what closes the ring of a loop that is closed.)
        self._on_loop_collected = weakref.finalize(loop, self.ring.close)
        _close_ring_with(loop)
        self.pid = os.getpid()
        self.ring.reap_in_close = False     # completions stay in the CQ: the fd wakes the loop
        self._users = 0
        self._submit_scheduled = False
        self._fd = self.ring.fileno
        # The ring's own method as the reader: a Python frame more per wake-up was 4 % of a
        # ping-pong's instructions. (close() removes it before the ring closes.)
        handlers = _Handlers()
        self._handlers = weakref.ref(handlers)
        loop.add_reader(self._fd, self.ring.run_callbacks, _report_handler_error, handlers)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop this driver runs in (RuntimeError once it was collected)."""
        loop = self._loop_ref()
        if loop is None:
            raise RuntimeError("the driver's event loop is gone")
        return loop

    def _loop_closed(self) -> bool:
        loop = self._loop_ref()
        return loop is None or loop.is_closed()

    def acquire(self) -> UringDriver:
        """Count a user (a stream, server or endpoint) of this driver; returns the driver."""
        self._users += 1
        return self

    def release(self) -> None:
        """A user is done: once no user is left and the last request had its last completion,
        the ring is closed (its fd does not outlive what used it)."""
        self._users -= 1
        if self._users <= 0:
            if self._loop_closed():
                self.close()                   # nothing will reap for it any more
            else:
                self.submit_soon()             # _submit closes the ring when idle

    def start(self, request: Request, handler: Handler) -> Request:
        """Call handler(completion) for each of request's completions; the request reaches the
        kernel with this loop iteration's one submit."""
        handlers = self._handlers()
        if handlers is None:
            raise RuntimeError("the driver's event loop is gone")
        handlers[request] = handler
        self.submit_soon()
        return request

    def submit_soon(self) -> None:
        """Submit what is queued once, at the end of this loop iteration."""
        if not self._submit_scheduled:
            self._submit_scheduled = True
            self.loop.call_soon(self._submit)

    def _submit(self) -> None:
        self._submit_scheduled = False
        ring = self.ring
        if ring.closed:
            return
        # Submit what is queued, reap what is posted, never sleep, and call each request's
        # handler in CQ order (in C). Requests the kernel could serve at once during the
        # submit are reaped here, in this iteration.
        handlers = self._handlers()
        if handlers is not None:
            ring.run_callbacks(_report_handler_error, handlers)
        if self._users <= 0:
            self.close()       # nobody is left to want the completions still to come

    @property
    def pending(self) -> int:
        """Requests that have not had their last completion."""
        return 0 if self.ring.closed else self.ring.pending

    def close(self) -> None:
        """Stop watching the ring and close it (cancelling what is pending)."""
        if self.ring.closed:
            return
        self._on_loop_collected.detach()
        if not self._loop_closed():
            self.loop.remove_reader(self._fd)
        self.ring.close()
        handlers = self._handlers()
        if handlers is not None:
            handlers.clear()            # no completion will come to call them
        loop = self._loop_ref()
        if loop is not None and _drivers.get(loop) is self:
            del _drivers[loop]


def _close_ring_with(loop: asyncio.AbstractEventLoop) -> None:
    """Make loop.close() close the loop's ring (its driver of the moment) just before the loop
    closes. Without it the ring outlived the loop: its requests' handlers refer to their
    streams, and those to the loop, so the loop was never collected either, and the
    multishot receives of streams never closed kept their sockets' files open (no FIN) and
    took the bytes that came later. Installed once per loop (drivers come and go)."""
    close = loop.close
    if getattr(close, "_csock_closes_ring", False):
        return
    loop_ref = weakref.ref(loop)

    def close_ring_then_loop() -> None:
        loop = loop_ref()
        if loop is not None and not loop.is_running():    # (a running loop's close raises)
            driver = _drivers.get(loop)
            if driver is not None:
                driver.close()
        close()

    close_ring_then_loop._csock_closes_ring = True     # type: ignore[attr-defined]
    try:
        loop.close = close_ring_then_loop              # type: ignore[method-assign]
    except (AttributeError, TypeError):
        pass        # a loop class without instance attributes: the finalizer is what is left


def _report_handler_error(handler: Handler, error: Exception) -> None:
    # One stream's bug must not stop the completions of the rest.
    logger.error("csock.aio io_uring engine: handler %r raised", handler, exc_info=error)


def cancel_quietly(request: Request | None, driver: UringDriver | None) -> None:
    """Ask the kernel to end request (its last completion comes later, with ECANCELED)."""
    if request is None or driver is None or request.done or driver.ring.closed:
        return
    try:
        driver.ring.cancel(request)
    except OSError:
        pass

