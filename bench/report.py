"""The table, the JSON and the plot of a benchmark run.

Every figure is given as the median over rounds with the smallest and largest beside it, for
rates and for ratios alike; a ratio is taken round by round (the implementations of a round
ran one after the other, interleaved) and its median is the median of those. A row whose
max/min exceeds SPREAD is flagged "!": the machine moved under it, re-run before quoting it.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from .runner import Result
from .workloads import Workload

# the asyncio workloads' references: "uvloop" and "asyncio" are each loop's own streams
# (aio-echo*) or loop.create_datagram_endpoint (aio-udp); "c-gso" is the C program with GSO
# ("csock-epoll": csock.aio's server on engine="epoll", the reference of the io_uring rows)
REFERENCES = ("c", "c-gso", "stdlib-naive", "stdlib-tuned", "dpkt", "scapy", "uvloop", "asyncio",
              "csock-epoll")
HEADINGS = {"c": "× C", "c-gso": "× C+GSO", "stdlib-naive": "× naive", "stdlib-tuned": "× tuned",
            "dpkt": "× dpkt", "scapy": "× scapy", "uvloop": "× uvloop", "asyncio": "× asyncio",
            "csock-epoll": "× epoll"}
SPREAD = 1.25          # max/min over rounds beyond which a row is flagged
FLAG = "!"
FORMAT = 2             # bench.json: 2 has "window" and per-round runs sized by time


@dataclass(frozen=True)
class Spread:
    """The smallest, median and largest of one figure over rounds."""
    low: float
    median: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        ordered = sorted(values)
        return cls(ordered[0], statistics.median(ordered), ordered[-1])

    @property
    def noisy(self) -> bool:
        return self.high > SPREAD * self.low


class Figures:
    """A run's rates by (workload, implementation) and round, and what is derived from them."""

    def __init__(self, results: Iterable[Result]) -> None:
        self.rounds: dict[tuple[str, str], dict[int, float]] = {}
        # echo rows: the server's CPU µs per message echoed, by round
        self.cpu_rounds: dict[tuple[str, str], dict[int, float]] = {}
        for r in results:
            self.rounds.setdefault((r.workload, r.implementation), {})[r.round] = r.rate
            if r.server_cpu is not None:
                per_unit = 1e6 * r.server_cpu / max(r.count - r.lost, 1)
                self.cpu_rounds.setdefault((r.workload, r.implementation), {})[r.round] = per_unit

    @classmethod
    def from_medians(cls, rates: dict[tuple[str, str], float]) -> Figures:
        """One round per figure (for tests and the plot's callers)."""
        return cls(Result(w, impl, 0, 1, 1.0, rate) for (w, impl), rate in rates.items())

    def medians(self) -> dict[tuple[str, str], float]:
        return {key: statistics.median(by.values()) for key, by in self.rounds.items()}

    def rate(self, workload: str, impl: str) -> Spread | None:
        by = self.rounds.get((workload, impl))
        return Spread.of(by.values()) if by else None

    def cpu(self, workload: str, impl: str) -> Spread | None:
        """The server's CPU time per message (µs) over rounds, where it was read."""
        by = self.cpu_rounds.get((workload, impl))
        return Spread.of(by.values()) if by else None

    def cpu_ratio(self, workload: str, impl: str, ref: str) -> Spread | None:
        """ref's server CPU per message over impl's, round by round: above 1 impl's server
        spends less per message (higher is better, as for rates)."""
        mine, theirs = self.cpu_rounds.get((workload, impl), {}), self.cpu_rounds.get(
            (workload, ref), {})
        # a round whose window was shorter than a clock tick read 0: no ratio from it
        both = sorted(r for r in set(mine) & set(theirs) if mine[r] > 0 and theirs[r] > 0)
        if impl == ref or not both:
            return None
        return Spread.of(theirs[r] / mine[r] for r in both)

    def ratio(self, workload: str, impl: str, ref: str) -> Spread | None:
        """impl's rate over ref's, round by round (rounds where both ran)."""
        mine, theirs = self.rounds.get((workload, impl), {}), self.rounds.get((workload, ref), {})
        both = sorted(set(mine) & set(theirs))
        if impl == ref or not both:
            return None
        return Spread.of(mine[r] / theirs[r] for r in both)

    def ratios(self, workload: Workload, impl: str = "csock") -> dict[str, Spread]:
        """impl's ratio to each reference that was measured."""
        found = {ref: self.ratio(workload.name, impl, ref) for ref in REFERENCES}
        return {ref: spread for ref, spread in found.items() if spread is not None}

    def implementations(self, workload: Workload) -> list[str]:
        """The workload's implementations that ran, in the workload's order, C last (and any
        others, such as csock-x3 of a wider aio-scale run, after them)."""
        ran = [impl for (w, impl) in self.rounds if w == workload.name]
        known = [
            impl for impl in (*workload.implementations, "c", *workload.c_variants) if impl in ran
        ]
        return known + sorted(set(ran) - set(known))

    def noisy(self, workload: Workload, impl: str) -> bool:
        """The row's rate or one of its ratios spread more than SPREAD over rounds."""
        rate = self.rate(workload.name, impl)
        return bool(rate and rate.noisy) or any(
            s.noisy for s in self.ratios(workload, impl).values()
        )


def ratio_text(spread: Spread, ref: str = "") -> str:
    """ "0.98× C (0.91–1.05)": the median ratio to ref, the smallest and largest over rounds."""
    label = f" {HEADINGS[ref][2:]}" if ref else ""
    return f"{number(spread.median)}×{label} ({number(spread.low)}–{number(spread.high)})"


def number(ratio: float) -> str:
    """Two decimals, or two significant digits below 0.1 (0.0031, not 0.00)."""
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def cpu_text(spread: Spread) -> str:
    """ "server CPU 3.12 µs/msg (2.98–3.40)": the median over rounds, the smallest and largest."""
    return (f"server CPU {spread.median:.3g} µs/msg "
            f"({spread.low:.3g}–{spread.high:.3g})")


def row_cells(workload: Workload, figures: Figures, impl: str) -> list[str]:
    """implementation, median, slowest and fastest round, flag, and its ratios as
    "median× ref (min–max)", then, where it was read, the server's CPU time per message."""
    rate = figures.rate(workload.name, impl)
    assert rate is not None
    ratios = "; ".join(ratio_text(s, ref) for ref, s in figures.ratios(workload, impl).items())
    cpu = figures.cpu(workload.name, impl)
    if cpu is not None:
        ratios = "; ".join(filter(None, [ratios, cpu_text(cpu)]))
    return [
        impl,
        workload.show(rate.median),
        workload.show(rate.low),
        workload.show(rate.high),
        FLAG if figures.noisy(workload, impl) else "",
        ratios,
    ]


def table(workloads: list[Workload], figures: Figures) -> str:
    """A block per workload: its title, then a line per implementation with the median rate
    over rounds, the slowest and fastest round's, the flag, and the ratios to each reference
    measured beside it."""
    heading = (
        f"{'':2}{'implementation':<14} {'median':>13} {'slowest':>13} {'fastest':>13} {FLAG:1}  "
    )
    lines = [heading + "ratios: median (min–max) over rounds"]
    for w in workloads:
        impls = figures.implementations(w)
        if not impls:
            continue
        lines.append(w.title)
        for impl in impls:
            name, median, low, high, flag, ratios = row_cells(w, figures, impl)
            lines.append(
                f"  {name:<14} {median:>13} {low:>13} {high:>13} {flag:1}  {ratios}".rstrip()
            )
    lines.append(
        f"{FLAG}: max/min over rounds above {SPREAD} (the rate or a ratio): noisy, re-run it"
    )
    return "\n".join(lines)


def target_lines(workloads: list[Workload], figures: Figures) -> list[str]:
    """A line per target, judged on the median of its row's per-round ratios (the csock row
    unless the target names another); for the csock row's targets the workload's other csock
    rows (another receive path, another event loop) follow on the same line, each with its own
    verdict. Where the server's CPU time was read, its ratio is judged too (the issue's
    targets hold for both figures)."""
    lines = []
    for w in workloads:
        for goal in w.goals():
            achieved = figures.ratios(w, goal.row).get(goal.ref)
            if achieved is None:
                continue
            line = (
                f"target {w.name}: {goal.row} ≥ {goal.minimum}× {goal.ref}: "
                f"{ratio_text(achieved)} ({verdict(achieved.median, goal.minimum)})"
            )
            line += cpu_verdict(figures, w, goal.row, goal.ref, goal.minimum)
            others = [impl for impl in w.implementations if impl.startswith("csock-")
                      and impl != goal.ref] if goal.row == "csock" else []
            for impl in others:
                other = figures.ratios(w, impl).get(goal.ref)
                if other is not None:
                    line += (f"; {impl} {ratio_text(other)} "
                             f"({verdict(other.median, goal.minimum)})")
            lines.append(line)
    return lines


def cpu_verdict(figures: Figures, w: Workload, row: str, ref: str, minimum: float) -> str:
    """"; server CPU/msg 2.10× (1.9–2.3) (met)", or "" where the CPU time was not read."""
    spread = figures.cpu_ratio(w.name, row, ref)
    if spread is None:
        return ""
    return f"; server CPU/msg {ratio_text(spread)} ({verdict(spread.median, minimum)})"


def verdict(ratio: float, minimum: float) -> str:
    return "met" if ratio >= minimum else "NOT met"


def scale_lines(workloads: list[Workload], figures: Figures) -> list[str]:
    """aio-scale: each process count's median rate relative to one process."""
    lines = []
    for w in workloads:
        one = figures.rate(w.name, "csock-x1")
        if w.name != "aio-scale" or one is None:
            continue
        parts = []
        for impl in figures.implementations(w):
            rate = figures.rate(w.name, impl)
            assert rate is not None
            parts.append(
                f"{impl[len('csock-x') :]} process(es) {w.show(rate.median)} "
                f"({rate.median / one.median:.2f}×)"
            )
        lines.append(
            "scale-out aio-scale (csock.aio on uvloop, SO_REUSEPORT, nothing pinned): "
            + ", ".join(parts)
        )
    return lines


def loss_lines(results: list[Result]) -> list[str]:
    """Units that never arrived (UDP), per workload and implementation, over all rounds."""
    lost: dict[str, dict[str, list[int]]] = {}
    for r in results:
        if r.lost or r.workload in lost:
            lost.setdefault(r.workload, {})
    for r in results:
        if r.workload in lost:
            totals = lost[r.workload].setdefault(r.implementation, [0, 0])
            totals[0] += r.lost
            totals[1] += r.count
    return [
        f"losses {w}: " + ", ".join(f"{impl} {gone} of {n}" for impl, (gone, n) in by_impl.items())
        for w, by_impl in lost.items()
    ]


def summary(document: dict[str, Any]) -> str:
    """How the figures were made, from a bench.json document: rounds, the shortest window."""
    runs = document["runs"]
    shortest = min((r["elapsed"] for r in runs), default=0.0)
    machine = document.get("machine", {})
    return (
        f"{rounds_text(runs)}, implementations interleaved, server and client pinned to different "
        f"CPUs; shortest timed window {shortest:.3g} s; {machine.get('cpus', '?')} CPUs, "
        f"Python {machine.get('python', '?')}, {machine.get('platform', '?')}, "
        f"{document.get('date', 'date unknown')}"
    )


def rounds_text(runs: list[dict[str, Any]]) -> str:
    """"3 rounds", or "3 rounds (5 for a, b)" where merged runs had another count."""
    per_workload: dict[str, int] = {}
    for run in runs:
        per_workload[run["workload"]] = max(per_workload.get(run["workload"], 0), run["round"] + 1)
    counts = Counter(per_workload.values())
    if not counts:
        return "no rounds"
    usual = counts.most_common(1)[0][0]
    others = [
        f"{n} for {', '.join(sorted(w for w, k in per_workload.items() if k == n))}"
        for n in sorted(set(per_workload.values()) - {usual})
    ]
    return f"{usual} rounds" + (f" ({'; '.join(others)})" if others else "")


def document(
    workloads: list[Workload], results: list[Result], window: float, quick: bool,
    only: list[str] | None = None, rounds: int | None = None,
) -> dict[str, Any]:
    """What --json writes: every run (per round), and the medians and ratios derived from them."""
    figures = Figures(results)
    return {
        "format": FORMAT,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m csock bench" + (" --quick" if quick else "")
        + (f" --rounds {rounds}" if rounds else "")
        + (" --only " + " ".join(only) if only else ""),
        "window": window,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "runs": [asdict(r) for r in results],
        "medians": [
            {"workload": w, "implementation": i, "rate": r}
            for (w, i), r in figures.medians().items()
        ],
        "ratios": {
            w.name: {ref: asdict(s) for ref, s in figures.ratios(w).items()} for w in workloads
        },
        # echo rows: the server's CPU µs per message (median, min, max over rounds), and each
        # row's CPU ratios (reference's µs/msg over the row's) for every target
        "targets": [
            {"workload": w.name, "row": goal.row, "reference": goal.ref, "minimum": goal.minimum,
             "rate_ratio": spread_dict(figures.ratio(w.name, goal.row, goal.ref)),
             "server_cpu_ratio": spread_dict(figures.cpu_ratio(w.name, goal.row, goal.ref))}
            for w in workloads for goal in w.goals()
        ],
        "server_cpu_us_per_msg": [
            {"workload": w, "implementation": i, **asdict(Spread.of(by.values()))}
            for (w, i), by in figures.cpu_rounds.items()
        ],
    }


def spread_dict(spread: Spread | None) -> dict[str, float] | None:
    return None if spread is None else asdict(spread)


def write_json(
    path: str, workloads: list[Workload], results: list[Result], window: float, quick: bool,
    only: list[str] | None = None, rounds: int | None = None,
) -> None:
    """rounds: as --rounds named it, if it did (it goes in the recorded command)."""
    with open(path, "w") as f:
        json.dump(document(workloads, results, window, quick, only, rounds), f, indent=1)
        f.write("\n")


def results_of(document: dict[str, Any]) -> list[Result]:
    return [Result(**run) for run in document["runs"]]


# one colour per implementation, the same in every plot: csock's rows in blues, the stdlib's in
# oranges, the packet libraries in browns, the event loops' own in greens, C in reds
COLOURS = {
    "csock": "#1f77b4",
    "csock-into": "#17becf",
    "csock-plain": "#9edae5",
    "csock-asyncio": "#aec7e8",
    "stdlib-naive": "#ff7f0e",
    "stdlib-tuned": "#ffbb78",
    "dpkt": "#8c564b",
    "scapy": "#c49c94",
    "uvloop": "#2ca02c",
    "asyncio": "#98df8a",
    "c": "#d62728",
    "c-gso": "#ff9896",
    "csock-uring": "#393b79",
    "csock-epoll": "#6b6ecf",
}


def draw(
    workloads: list[Workload],
    rates: dict[tuple[str, str], float],
    spreads: dict[tuple[str, str], Spread] | None = None,
    title: str = "csock benchmarks",
) -> Any:
    """The figure: horizontal bars, one group per workload, each implementation's median rate
    relative to the C program (or, without one, to csock), on a log scale so 0.01× and 10×
    both read; with spreads, a whisker from each one's min to its max over rounds. The legend
    sits outside the axes, where it covers no bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [w for w in workloads if any((w.name, impl) in rates for impl in COLOURS)]
    present = [impl for impl in COLOURS if any((w.name, impl) in rates for w in shown)]
    fig, ax = plt.subplots(figsize=(11.5, 0.55 * len(shown) + 1.5))
    labelled: set[str] = set()
    for i, w in enumerate(shown):
        here = [impl for impl in present if (w.name, impl) in rates]
        base = rates.get((w.name, "c")) or rates.get((w.name, "csock")) or 1.0
        height = 0.8 / len(here)
        for k, impl in enumerate(here):
            value = rates[w.name, impl] / base
            ax.barh(
                i + (k - (len(here) - 1) / 2) * height,
                value,
                height,
                color=COLOURS[impl],
                label=None if impl in labelled else impl,
            )
            spread = (spreads or {}).get((w.name, impl))
            if spread is not None:
                ax.plot(
                    [spread.low / base, spread.high / base],
                    [i + (k - (len(here) - 1) / 2) * height] * 2,
                    color="black",
                    linewidth=0.7,
                )
            labelled.add(impl)
    ax.set_yticks(range(len(shown)), [w.title for w in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel(
        "median rate relative to the C program (or csock where there is none),"
        " whiskers min–max over rounds; higher is better"
    )
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda j: present.index(labels[j]))
    ax.legend(
        [handles[j] for j in order],
        [labels[j] for j in order],
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
    )
    fig.tight_layout()
    return fig


def plot(
    path: str, workloads: list[Workload], figures: Figures, title: str = "csock benchmarks"
) -> None:
    """draw() into a PNG file (the legend included), with each bar's min–max whisker."""
    import matplotlib.pyplot as plt

    spreads = {key: Spread.of(by.values()) for key, by in figures.rounds.items()}
    fig = draw(workloads, figures.medians(), spreads, title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
