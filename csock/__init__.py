"""csock: a Cython-accelerated drop-in for Python's ``socket`` module.

``import csock as socket`` just works: every public name of the stdlib module is here (the
same object unless it creates sockets), and the socket classes add batch, vectored, framed
and zero-copy paths on top of the stdlib behaviour.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The stdlib module from csock's one home for it: this file also runs as `socket` itself
# (importlib.reload after sys.modules["socket"] = csock), where `import socket` is csock.
from ._stdlib import socket as _std

if TYPE_CHECKING:
    from ._stdlib_names import *  # noqa: F401,F403  (the same, less the names csock replaces)
else:
    globals().update({name: getattr(_std, name) for name in _std.__all__})   # the drop-in surface

# Public names outside socket.__all__ too (AddressFamily, SocketKind, MsgFlag, ...).
globals().update(
    {k: v for k, v in vars(_std).items() if not k.startswith("_") and k not in globals()}
)

from . import _fastio as _fastio
from ._base import create_connection as create_connection
from ._base import create_server as create_server
from ._base import fromfd as fromfd
from ._base import has_dualstack_ipv6 as has_dualstack_ipv6
from ._base import register_with_multiprocessing
from ._base import socket as socket
from ._base import socketpair as socketpair
from ._fastio import SP_EM as SP_EM
from ._fastio import SP_OB as SP_OB
from ._fastio import SP_SA as SP_SA
from ._fastio import SP_SP as SP_SP
from ._fastio import Datagram as Datagram
from ._fastio import FramedStream as FramedStream
from ._fastio import FrameTooLargeError as FrameTooLargeError
from ._fastio import IncompleteReadError as IncompleteReadError
from ._fastio import MessageView as MessageView
from ._fastio import SPPHeader as SPPHeader
from .datagram import DatagramSocket as DatagramSocket
from .raw import RawSocket as RawSocket
from .seqpacket import MalformedRecordError as MalformedRecordError
from .seqpacket import SeqPacketSocket as SeqPacketSocket
from .seqpacket import SequenceError as SequenceError
from .seqpacket import TruncatedRecordError as TruncatedRecordError
from .stream import StreamSocket as StreamSocket

# Tests put socket._fallback_socketpair in place of socketpair: csock's makes csock sockets.
# (Only where the stdlib has one: 3.13, and 3.12/3.11 releases since gh-122133.)
if hasattr(_std, "_fallback_socketpair"):
    from ._base import _fallback_socketpair as _fallback_socketpair

register_with_multiprocessing()     # every class is registered by now (csock.socket and its kinds)
del register_with_multiprocessing

__version__ = "0.1.0"

__all__ = list(_std.__all__) + [
    "StreamSocket",
    "DatagramSocket",
    "SeqPacketSocket",
    "RawSocket",
    "FramedStream",
    "IncompleteReadError",
    "FrameTooLargeError",
    "MessageView",
    "Datagram",
    "SPPHeader",
    "SequenceError",
    "MalformedRecordError",
    "TruncatedRecordError",
    "SP_SP",
    "SP_SA",
    "SP_OB",
    "SP_EM",
]


def __getattr__(name: str) -> Any:
    if name in ("aio", "packet"):   # without an explicit import (asyncio loads only when used)
        import importlib

        return importlib.import_module(f".{name}", __name__)
    # Private helpers of the stdlib module (_GLOBAL_DEFAULT_TIMEOUT, ...) for code that reaches in.
    try:
        return getattr(_std, name)
    except AttributeError:
        raise AttributeError(f"module 'csock' has no attribute {name!r}") from None
