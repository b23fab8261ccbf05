"""DatagramSocket (SOCK_DGRAM): connectionless datagrams (UDP, AF_UNIX dgram): boundaries kept, delivery not guaranteed."""
from __future__ import annotations

import socket as _std

from ._base import register_kind, socket


class DatagramSocket(socket):
    """connectionless datagrams (UDP, AF_UNIX dgram): boundaries kept, delivery not guaranteed."""


register_kind(_std.SOCK_DGRAM, DatagramSocket)
