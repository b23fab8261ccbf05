# Stubs for the compiled csock._packet (src/packet/_packet.pyx). Each section mirrors one
# include file.
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address
from typing import Any, ClassVar, TypeAlias, TypeVar, final

from typing_extensions import Buffer, Self, disjoint_base

from ._fastio import ReadOnlyView

# --- checksum.pyx ---
def checksum(data: Buffer) -> int: ...

# --- packet.pyx ---
_L = TypeVar("_L", bound=Layer)

class PacketError(ValueError): ...

@final
class PayloadView(ReadOnlyView):
    """The payload of a parsed packet: read-only, bytes-like, a view into the parsed buffer."""
    @property
    def obj(self) -> bytes | memoryview: ...

def packet_items(packets: Iterable[Any], address: Any, header_included: bool,
                 fallback: Callable[[Any, Any], tuple[Any, Any]]) -> list[tuple[Any, Any]]: ...

@disjoint_base
class Layer:
    """One protocol header and what it carries; stack with ``/``, build with ``bytes()``."""
    @property
    def payload(self) -> Any: ...
    @payload.setter
    def payload(self, value: Layer | Buffer | None) -> None: ...
    def __bytes__(self) -> bytes: ...
    def build(self) -> bytes: ...
    def __len__(self) -> int: ...
    def __truediv__(self, other: Layer | Buffer) -> Self: ...
    def __rtruediv__(self, other: Buffer, /) -> Layer: ...
    def __getitem__(self, cls: type[_L]) -> _L: ...
    def __contains__(self, cls: object) -> bool: ...
    def haslayer(self, cls: type[Layer]) -> bool: ...
    def getlayer(self, cls: type[_L]) -> _L | None: ...
    def layers(self) -> list[type[Layer]]: ...
    def copy(self) -> Self: ...
    def __copy__(self) -> Self: ...
    def __deepcopy__(self, memo: Any) -> Self: ...
    def verify(self) -> None: ...
    def fields(self) -> dict[str, Any]: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

_Address: TypeAlias = str | bytes | bytearray | IPv4Address | IPv6Address

def parse(data: Buffer, first: str = ..., verify: bool = ...) -> Layer: ...

# --- ipv4.pyx ---
@final
class IPv4(Layer):
    version: int
    ihl: int | None
    tos: int
    len: int | None
    id: int
    frag: int
    ttl: int
    proto: int | None
    chksum: int | None
    def __init__(
        self,
        version: int = ...,
        ihl: int | None = ...,
        tos: int = ...,
        len: int | None = ...,
        id: int = ...,
        flags: int | str = ...,
        frag: int = ...,
        ttl: int = ...,
        proto: int | None = ...,
        chksum: int | None = ...,
        src: _Address = ...,
        dst: _Address = ...,
        options: Buffer | None = ...,
    ) -> None: ...
    @property
    def flags(self) -> int: ...
    @flags.setter
    def flags(self, value: int | str) -> None: ...
    @property
    def src(self) -> str: ...
    @src.setter
    def src(self, value: _Address) -> None: ...
    @property
    def dst(self) -> str: ...
    @dst.setter
    def dst(self, value: _Address) -> None: ...
    @property
    def options(self) -> bytes: ...
    @options.setter
    def options(self, value: Buffer | None) -> None: ...

# --- ipv6.pyx ---
@final
class IPv6(Layer):
    version: int
    tc: int
    fl: int
    plen: int | None
    nh: int | None
    hlim: int
    def __init__(
        self,
        version: int = ...,
        tc: int = ...,
        fl: int = ...,
        plen: int | None = ...,
        nh: int | None = ...,
        hlim: int = ...,
        src: _Address = ...,
        dst: _Address = ...,
        ext: Buffer | None = ...,
    ) -> None: ...
    @property
    def src(self) -> str: ...
    @src.setter
    def src(self, value: _Address) -> None: ...
    @property
    def dst(self) -> str: ...
    @dst.setter
    def dst(self, value: _Address) -> None: ...
    @property
    def ext(self) -> bytes: ...
    @ext.setter
    def ext(self, value: Buffer | None) -> None: ...

# --- icmp.pyx ---
@disjoint_base
class _ICMPBase(Layer):
    type: int
    code: int
    chksum: int | None
    id: int
    seq: int

@final
class ICMP(_ICMPBase):
    def __init__(
        self,
        type: int = ...,
        code: int = ...,
        chksum: int | None = ...,
        id: int = ...,
        seq: int = ...,
    ) -> None: ...

@final
class ICMPv6(_ICMPBase):
    def __init__(
        self,
        type: int = ...,
        code: int = ...,
        chksum: int | None = ...,
        id: int = ...,
        seq: int = ...,
    ) -> None: ...

# --- udp.pyx ---
@final
class UDP(Layer):
    sport: int
    dport: int
    len: int | None
    chksum: int | None
    def __init__(
        self, sport: int = ..., dport: int = ..., len: int | None = ..., chksum: int | None = ...
    ) -> None: ...

# --- tcp.pyx ---
@final
class TCP(Layer):
    sport: int
    dport: int
    seq: int
    ack: int
    dataofs: int | None
    reserved: int
    window: int
    chksum: int | None
    urgptr: int
    def __init__(
        self,
        sport: int = ...,
        dport: int = ...,
        seq: int = ...,
        ack: int = ...,
        dataofs: int | None = ...,
        reserved: int = ...,
        flags: int | str = ...,
        window: int = ...,
        chksum: int | None = ...,
        urgptr: int = ...,
        options: Buffer | None = ...,
    ) -> None: ...
    @property
    def flags(self) -> int: ...
    @flags.setter
    def flags(self, value: int | str) -> None: ...
    @property
    def options(self) -> bytes: ...
    @options.setter
    def options(self, value: Buffer | None) -> None: ...
