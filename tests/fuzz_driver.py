"""Coverage-guided fuzzing of csock's decoders with atheris (the [fuzz] extra).

    python tests/fuzz_driver.py frames -runs=10000000   # the documented long run
    python tests/fuzz_driver.py packet -runs=20000   # CI's short run (tests/test_fuzz.py)

Targets: ``frames`` (FramedStream's decoder, bytes fed through a real socketpair), ``packet``
(csock.packet.parse, every first layer), ``spp`` (SPPHeader unpacking). Only the documented
exceptions may escape; anything else, or a crash, is a finding. At the end it prints a line
``fuzz <target>: N inputs in S s (R inputs/s), 0 crashes``.

atheris instruments the Python side; the Cython side runs natively and is watched for crashes
(build it with CSOCK_DEBUG=1 and preload libasan to catch memory errors as they happen).
"""
from __future__ import annotations

import sys
import time

import atheris

with atheris.instrument_imports():
    import csock

TARGETS = {}


def target(fn):
    TARGETS[fn.__name__] = atheris.instrument_func(fn)
    return fn


@target
def frames(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    max_size = fdp.ConsumeIntInRange(0, 4096)
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    a, b = csock.socketpair()
    try:
        a.sendall(payload)
        a.shutdown(csock.SHUT_WR)
        stream = csock.FramedStream(b, max_size=max_size)
        seen = 0
        try:
            while True:
                batch = stream.recv_many()
                if not batch:
                    break
                for message in batch:
                    assert len(message) <= max_size
                    seen += 4 + len(message)
            assert seen == len(payload)
        except csock.IncompleteReadError as e:
            assert seen + len(e.partial) == len(payload)
        except csock.FrameTooLargeError:
            pass
    finally:
        a.close()
        b.close()


@target
def packet(data: bytes) -> None:
    from csock import packet as pk

    fdp = atheris.FuzzedDataProvider(data)
    first = fdp.PickValueInList(["ipv4", "ipv6", "udp", "tcp", "icmp", "icmpv6"])
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        p = pk.parse(raw, first=first)
    except pk.PacketError:
        return
    assert bytes(p) == raw, "a parsed packet must give back exactly its bytes"
    try:
        p.verify()
    except pk.PacketError:
        pass


@target
def spp(data: bytes) -> None:
    try:
        header = csock.SPPHeader.unpack(data)
    except ValueError:
        return
    assert csock.SPPHeader.unpack(header.pack()) == header


class Counter:
    """Counts inputs and, since libFuzzer leaves with exit(3) and Python's atexit never runs,
    prints the report itself when the -runs=N budget is reached."""

    def __init__(self, name, fn, runs):
        self.name, self.fn, self.runs, self.count = name, fn, runs, 0
        self.start = time.monotonic()

    def __call__(self, data: bytes) -> None:
        self.fn(data)
        self.count += 1
        if self.count == self.runs:
            self.report()

    def report(self) -> None:
        elapsed = time.monotonic() - self.start
        print(f"fuzz {self.name}: {self.count} inputs in {elapsed:.1f} s "
              f"({self.count / max(elapsed, 1e-9):,.0f} inputs/s), 0 crashes", flush=True)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: fuzz_driver.py {{{','.join(TARGETS)}}} [libFuzzer options, e.g. -runs=N]")
    name = sys.argv.pop(1)
    runs = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("-runs=")), -1)
    counter = Counter(name, TARGETS[name], runs)
    atheris.Setup(sys.argv, counter)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
