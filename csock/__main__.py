"""python -m csock bench | ping ...

``bench`` launches the benchmark harness of a source checkout (bench/ beside the csock
package); an installed wheel has none and says how to get one. ``ping`` is csock's own."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

CHECKOUT = Path(__file__).resolve().parent.parent
BENCH_PROG = "python -m csock bench"
NO_HARNESS = """\
python -m csock bench: the benchmark harness is not part of the installed package; it lives
in the source checkout, beside the C reference programs. Run it from a checkout:

    git clone <csock repository> csock && cd csock
    python3 -m venv .venv && . .venv/bin/activate
    pip install -e ".[bench]" && python -m csock bench
"""


def find_harness() -> ModuleType | None:
    """The checkout's bench package (CHECKOUT/bench), or None where there is none (a wheel).
    bench/c must be there too: in site-packages, a "bench" could be anyone's."""
    if not ((CHECKOUT / "bench" / "__init__.py").is_file() and (CHECKOUT / "bench" / "c").is_dir()):
        return None
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    harness = importlib.import_module("bench")
    if Path(harness.__file__ or "").resolve().parent != CHECKOUT / "bench":
        return None                              # another "bench" shadows the checkout's
    return harness


def bench(argv: list[str]) -> int:
    harness = find_harness()
    if harness is None:
        print(NO_HARNESS, end="", file=sys.stderr)
        return 2
    return int(harness.main(argv, prog=BENCH_PROG))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # each command parses its own options, so a usage error prints that command's usage
    if argv[:1] == ["bench"]:
        return bench(argv[1:])
    from . import _ping

    if argv[:1] == ["ping"]:
        return _ping.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m csock")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("bench",
                        help="run the benchmarks (csock vs stdlib vs C; from a source checkout)")
    commands.add_parser("ping", help="ICMP echo over a raw socket (IPv4 and IPv6)")
    parser.parse_args(argv)                      # prints the help, or a usage error: exit 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
