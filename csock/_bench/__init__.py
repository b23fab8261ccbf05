"""``python -m csock bench``: csock beside the stdlib and a plain C program, as ratios."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .report import loss_lines, plot, scale_lines, table, target_lines, write_json
from .runner import BenchError, medians, run
from .workloads import WORKLOADS, scale_workload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="smaller counts, 3 rounds")
    parser.add_argument("--rounds", type=int, help="rounds per implementation (default 5, quick 3)")
    parser.add_argument("--only", nargs="+", metavar="WORKLOAD",
                        choices=[w.name for w in WORKLOADS], help="run only these workloads")
    parser.add_argument("--json", metavar="OUT", help="write every run, medians and ratios as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the ratios (needs the [plot] extra)")
    parser.add_argument("--processes", type=int, default=2, metavar="N",
                        help="aio-scale: run the csock.aio echo server in 1..N processes sharing "
                             "one port (SO_REUSEPORT); default 2")
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)   # tests: tiny runs


def progress_bar(**kwargs: Any) -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(unit="run", file=sys.stderr, leave=False, **kwargs)


def run_bench(args: argparse.Namespace) -> int:
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib: pip install 'csock[plot]'", file=sys.stderr)
            return 2
    if args.processes < 1:
        print("--processes must be at least 1", file=sys.stderr)
        return 2
    every = [scale_workload(args.processes) if w.name == "aio-scale" else w for w in WORKLOADS]
    workloads = [w for w in every if not args.only or w.name in args.only]
    rounds = args.rounds or (3 if args.quick else 5)
    try:
        results = run(workloads, rounds, args.quick, args.scale, progress_bar,
                      log=lambda m: print(m, file=sys.stderr))
    except BenchError as error:
        print(f"benchmark FAILED: {error}", file=sys.stderr)
        return 1
    rates = medians(results)
    print(f"medians of {rounds} rounds; server and client pinned to different CPUs\n")
    print(table(workloads, rates))
    print()
    for line in target_lines(workloads, rates) + scale_lines(workloads, rates) + loss_lines(results):
        print(line)
    if args.json:
        write_json(args.json, workloads, results, rates)
    if args.plot:
        plot(args.plot, workloads, rates)
        print(f"plot written to {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m csock bench", description=__doc__)
    add_arguments(parser)
    return run_bench(parser.parse_args(argv))
