"""RawSocket (SOCK_RAW): raw IP: the protocol headers are the caller's."""
from __future__ import annotations

import socket as _std

from ._base import register_kind, socket


class RawSocket(socket):
    """raw IP: the protocol headers are the caller's."""


register_kind(_std.SOCK_RAW, RawSocket)
