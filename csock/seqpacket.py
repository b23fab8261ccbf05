"""SeqPacketSocket (SOCK_SEQPACKET): reliable, ordered records (AF_UNIX SOCK_SEQPACKET, SCTP)."""
from __future__ import annotations

import socket as _std

from ._base import register_kind, socket


class SeqPacketSocket(socket):
    """reliable, ordered records (AF_UNIX SOCK_SEQPACKET, SCTP)."""


register_kind(_std.SOCK_SEQPACKET, SeqPacketSocket)
