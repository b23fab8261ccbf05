"""python -m csock bench | ping ..."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m csock")
    commands = parser.add_subparsers(dest="command", required=True)
    from . import _bench, _ping

    _bench.add_arguments(commands.add_parser("bench", help="run the benchmarks (csock vs stdlib vs C)"))
    _ping.add_arguments(commands.add_parser("ping", help="ICMP echo over a raw socket (IPv4 and IPv6)"))
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench.run_bench(args)
    return _ping.ping(args)


if __name__ == "__main__":
    sys.exit(main())
