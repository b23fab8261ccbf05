"""One side of one benchmark run:  python -m bench.side WORKLOAD IMPL ROLE N WHERE

For TCP workloads ROLE is server (WHERE: an inherited listening fd, one connection accepted)
or client (WHERE: a TCP port on 127.0.0.1); for UDP and SEQPACKET ones WHERE is an inherited
fd, one end of a pair the runner connected; for "udp-many" (udp-ingest-64, see ingest.py) the
receiver's WHERE is "FD,FD,...:CONTROL_FD" (its sender is the C program). For "tcp-many" (the
asyncio echo workloads, see aio.py) WHERE is a port on 127.0.0.1 both sides are told: the
server binds it with SO_REUSEPORT and prints "ready" before the client starts. Prints
{"elapsed": seconds, "count": n, "received": units that arrived}; exit 1 on a data mismatch.
"""
from __future__ import annotations

import json
import socket
import sys
from typing import Any

from .workers import WORKERS, DataMismatch
from .workloads import BY_NAME


def connect(module: Any, transport: str, role: str, where: str) -> Any:
    if transport != "tcp":
        return module.socket(fileno=int(where))
    if role == "server":
        listener = module.socket(fileno=int(where))
        sock, _ = listener.accept()
        listener.close()
    else:
        sock = module.create_connection(("127.0.0.1", int(where)))
    sock.setsockopt(module.IPPROTO_TCP, module.TCP_NODELAY, 1)
    return sock


def run_special(workload: str, impl: str, role: str, n: int, where: str) -> tuple[float, int]:
    """In-memory packet workloads (one process) and the raw-socket end-to-end one."""
    from . import packets

    if BY_NAME[workload].transport == "inproc":
        return packets.in_memory(workload, impl, n)
    port, side_fd = (int(x) for x in where.split(":"))
    side = socket.socket(fileno=side_fd)
    if role == "server":
        return packets.raw_server(impl, n, port, side)
    return packets.raw_client(impl, n, port, side), n


def main() -> int:
    workload, impl, role, n, where = sys.argv[1:6]
    if workload.startswith("aio-"):                 # asyncio programs: bench/aio.py
        from . import aio

        return aio.main(workload, BY_NAME[workload].transport, impl, role, int(n), where)
    if BY_NAME[workload].transport == "udp-many":   # many sockets, one receiver: bench/ingest.py
        from . import ingest

        return ingest.main(workload, impl, int(n), where)
    if BY_NAME[workload].transport in ("inproc", "raw"):
        elapsed, received = run_special(workload, impl, role, int(n), where)
        print(json.dumps({"elapsed": elapsed, "count": int(n), "received": received}))
        return 0
    module, server, client = WORKERS[workload, impl]
    sock = connect(module, BY_NAME[workload].transport, role, where)
    try:
        outcome = (server if role == "server" else client)(sock, int(n))
    except DataMismatch as error:
        print(f"DATA MISMATCH in {workload}/{impl} ({role}): {error}", file=sys.stderr)
        return 1
    finally:
        sock.close()
    elapsed, received = outcome if isinstance(outcome, tuple) else (outcome, int(n))
    print(json.dumps({"elapsed": elapsed, "count": int(n), "received": received}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
