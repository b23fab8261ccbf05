"""The table, the JSON and the plot of a benchmark run."""
from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from typing import Any

from .runner import Result
from .workloads import Workload

# the asyncio workloads' references: "uvloop" and "asyncio" are each loop's own streams
# (aio-echo*) or loop.create_datagram_endpoint (aio-udp); "c-gso" is the C program with GSO
REFERENCES = ("c", "c-gso", "stdlib-naive", "stdlib-tuned", "dpkt", "scapy", "uvloop", "asyncio")
HEADINGS = {"c": "× C", "c-gso": "× C+GSO", "stdlib-naive": "× naive", "stdlib-tuned": "× tuned",
            "dpkt": "× dpkt", "scapy": "× scapy", "uvloop": "× uvloop", "asyncio": "× asyncio"}


def ratios(workload: Workload,
           rates: dict[tuple[str, str], float], impl: str = "csock") -> dict[str, float]:
    """csock's (or another csock row's) median rate divided by each reference's."""
    mine = rates.get((workload.name, impl))
    return {ref: mine / rates[workload.name, ref] for ref in REFERENCES
            if mine and (workload.name, ref) in rates}


def table(workloads: list[Workload], rates: dict[tuple[str, str], float]) -> str:
    """One line per (workload, implementation): the median and its ratio to each reference
    that was measured (columns for references never measured are left out)."""
    references = [ref for ref in REFERENCES if any(impl == ref for _, impl in rates)]
    lines = [f"{'workload':<42} {'implementation':<14} {'median':>16} "
             + " ".join(f"{HEADINGS[ref]:>8}" for ref in references)]
    for w in workloads:
        for impl in list(w.implementations) + ["c", *w.c_variants]:
            rate = rates.get((w.name, impl))
            if rate is None:
                continue
            cells = []
            for ref in references:
                base = rates.get((w.name, ref))
                cells.append(f"{rate / base:.2f}×" if base else "-")
            lines.append(
                f"{w.title:<42} {impl:<14} {w.show(rate):>16} " + " ".join(f"{c:>8}" for c in cells)
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def target_lines(workloads: list[Workload], rates: dict[tuple[str, str], float]) -> list[str]:
    """A line per target, judged on the csock row; the workload's other csock rows (another
    receive path, another event loop) follow on the same line, each with its own verdict."""
    lines = []
    for w in workloads:
        variants = [impl for impl in w.implementations if impl.startswith("csock-")]
        for ref, minimum in w.targets:
            achieved = ratios(w, rates).get(ref)
            if achieved is None:
                continue
            line = (f"target {w.name}: csock ≥ {minimum}× {ref}: {achieved:.2f}× "
                    f"({verdict(achieved, minimum)})")
            for impl in variants:
                other = ratios(w, rates, impl).get(ref)
                if other is not None:
                    line += f"; {impl} {other:.2f}× ({verdict(other, minimum)})"
            lines.append(line)
    return lines


def verdict(ratio: float, minimum: float) -> str:
    return "met" if ratio >= minimum else "NOT met"


def scale_lines(workloads: list[Workload], rates: dict[tuple[str, str], float]) -> list[str]:
    """aio-scale: each process count's rate relative to one process."""
    lines = []
    for w in workloads:
        if w.name != "aio-scale" or (w.name, "csock-x1") not in rates:
            continue
        one = rates[w.name, "csock-x1"]
        scaled = [f"{impl[len('csock-x'):]} process(es) {w.show(rates[w.name, impl])} "
                  f"({rates[w.name, impl] / one:.2f}×)"
                  for impl in w.implementations if (w.name, impl) in rates]
        lines.append("scale-out aio-scale (csock.aio on uvloop, SO_REUSEPORT, nothing pinned): "
                     + ", ".join(scaled))
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
    return [f"losses {w}: "
            + ", ".join(f"{impl} {lost} of {n}" for impl, (lost, n) in by_impl.items())
            for w, by_impl in lost.items()]


def write_json(path: str, workloads: list[Workload], results: list[Result],
               rates: dict[tuple[str, str], float]) -> None:
    document = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "runs": [asdict(r) for r in results],
        "medians": [{"workload": w, "implementation": i, "rate": r} for (w, i), r in rates.items()],
        "ratios": {w.name: ratios(w, rates) for w in workloads},
    }
    with open(path, "w") as f:
        json.dump(document, f, indent=1)


# one colour per implementation, the same in every plot: csock's rows in blues, the stdlib's in
# oranges, the packet libraries in browns, the event loops' own in greens, C in reds
COLOURS = {"csock": "#1f77b4", "csock-into": "#17becf", "csock-plain": "#9edae5",
           "csock-asyncio": "#aec7e8", "stdlib-naive": "#ff7f0e", "stdlib-tuned": "#ffbb78",
           "dpkt": "#8c564b", "scapy": "#c49c94", "uvloop": "#2ca02c", "asyncio": "#98df8a",
           "c": "#d62728", "c-gso": "#ff9896"}


def draw(workloads: list[Workload], rates: dict[tuple[str, str], float]) -> Any:
    """The figure: horizontal bars, one group per workload, each implementation's median rate
    relative to the C program (or, without one, to csock), on a log scale so 0.01× and 10×
    both read. The legend sits outside the axes, where it covers no bar."""
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
            ax.barh(i + (k - (len(here) - 1) / 2) * height, rates[w.name, impl] / base, height,
                    color=COLOURS[impl], label=None if impl in labelled else impl)
            labelled.add(impl)
    ax.set_yticks(range(len(shown)), [w.title for w in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel(
        "median rate relative to the C program (or csock where there is none); higher is better"
    )
    ax.set_title("csock benchmarks")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda j: present.index(labels[j]))
    ax.legend([handles[j] for j in order], [labels[j] for j in order], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def plot(path: str, workloads: list[Workload], rates: dict[tuple[str, str], float]) -> None:
    """draw() into a PNG file (the legend included)."""
    import matplotlib.pyplot as plt

    fig = draw(workloads, rates)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
