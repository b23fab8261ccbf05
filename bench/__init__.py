"""``python -m csock bench``: csock beside the stdlib and a plain C program, as ratios.

The harness lives in the source checkout, beside the C reference programs (bench/c); csock's
launcher (csock/__main__.py) imports it from there. Its extra tools (tqdm, matplotlib, uvloop,
dpkt, scapy) come from the bench extra: pip install -e ".[bench]"."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .report import (
    Figures,
    loss_lines,
    plot,
    scale_lines,
    table,
    target_lines,
    write_json,
)
from .runner import WINDOW, BenchError, run
from .workloads import WORKLOADS, scale_workload

PROG = "python -m csock bench"


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (rounds and processes count things)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def workload_list() -> str:
    """The --help epilog: every workload's name and what it moves."""
    width = max(len(w.name) for w in WORKLOADS)
    return "workloads (--only NAME ...):\n" + "\n".join(
        f"  {w.name:<{width}}  {w.title}" for w in WORKLOADS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds instead of 5 (each timed window still lasts at least 1 s)")
    parser.add_argument("--rounds", type=positive_int, metavar="N",
                        help="rounds per implementation, at least 1 (default 5, quick 3)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="WORKLOAD",
        choices=[w.name for w in WORKLOADS],
        help="run only these workloads (listed below)",
    )
    parser.add_argument(
        "--json", metavar="OUT", help="write every run (each round), medians and ratios as JSON"
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw the ratios (needs matplotlib: the bench extra)"
    )
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=2,
        metavar="N",
        help="aio-scale: run the csock.aio echo server in 1..N processes sharing "
        "one port (SO_REUSEPORT); default 2",
    )
    # tests' tiny runs: smaller probe counts (--scale) and shorter windows (--window, seconds)
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, default=WINDOW, help=argparse.SUPPRESS)


def make_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog=workload_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def output_problem(option: str, path: str) -> str | None:
    """Why PATH cannot be written (checked before the run, so a long run's results are never
    lost to a typo), or None."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        return f"{option} {path}: is a directory"
    if not folder.is_dir():
        return f"{option} {path}: directory {str(folder)!r} does not exist"
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        return f"{option} {path}: not writable"
    return None


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit 2) found before anything runs."""
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            problem = output_problem(option, path)
            if problem:
                parser.error(problem)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install -e '.[bench]'")


class NoProgress:
    """Stands in for a tqdm bar when tqdm is not installed."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass

    def update(self, n: int) -> None:
        pass


def progress_bar(**kwargs: Any) -> Any:
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        print("tqdm is not installed: no progress bar (pip install -e '.[bench]')", file=sys.stderr)
        return NoProgress()
    return tqdm(unit="run", file=sys.stderr, leave=False, **kwargs)


def run_bench(args: argparse.Namespace) -> int:
    every = [scale_workload(args.processes) if w.name == "aio-scale" else w for w in WORKLOADS]
    workloads = [w for w in every if not args.only or w.name in args.only]
    rounds = args.rounds or (3 if args.quick else 5)
    try:
        results = run(
            workloads,
            rounds,
            args.quick,
            args.scale,
            progress_bar,
            log=lambda m: print(m, file=sys.stderr),
            window=args.window,
        )
    except BenchError as error:
        print(f"benchmark FAILED: {error}", file=sys.stderr)
        return 1
    figures = Figures(results)
    print(
        f"{rounds} rounds, each timed window at least {args.window:g} s; server and client "
        "pinned to different CPUs\n"
    )
    print(table(workloads, figures))
    print()
    for line in (
        target_lines(workloads, figures) + scale_lines(workloads, figures) + loss_lines(results)
    ):
        print(line)
    if args.json:
        write_json(args.json, workloads, results, args.window, args.quick, args.only, args.rounds)
    if args.plot:
        plot(args.plot, workloads, figures)
        print(f"plot written to {args.plot}")
    return 0


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    parser = make_parser(prog)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    return run_bench(args)
