"""One session per supported Python: build csock in a fresh venv, run the suite's fast half and
CPython's fast conformance subset against that version's stdlib.

    nox                      # every version nox finds on PATH
    nox -s tests-3.12        # one version

CI (.ci/run) puts pyenv's 3.10, 3.12 and 3.13 on PATH and runs their sessions; 3.11 runs the
whole suite and the whole conformance set there directly.
"""
from __future__ import annotations

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

# What the fast half imports (the test extra less plotting, typing and fuzzing tools, whose
# tests are slow or skip without them), plus csock's build requirements. The benchmark's
# comparison libraries stay: its tiny run expects every workload to have them.
DEPENDENCIES = [
    "Cython>=3.0.8", "setuptools>=64", "wheel", "tqdm>=4.60",
    "pytest>=7", "pytest-timeout>=2.1", "hypothesis>=6", "numpy>=1.21", "typing_extensions>=4.15",
    "uvloop>=0.19", "dpkt>=1.9", "scapy>=2.5",
]

PYTEST = ["python", "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]

# Failures known today on one version, each naming its csock defect; deselected there so the
# session checks everything else. The integrator removes an entry when its fix lands.
KNOWN_FAILURES: dict[str, dict[str, str]] = {}

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install(*DEPENDENCIES)
    # in place, beside the other versions' builds (each has its own ABI tag)
    session.run("python", "setup.py", "-q", "build_ext", "--inplace", silent=True)
    known = [
        arg for test in KNOWN_FAILURES.get(str(session.python), {}) for arg in ("--deselect", test)
    ]
    session.run(*PYTEST, "-m", "not slow", *known, *session.posargs)
    # CPython's fast conformance subset, both ways against this version's stdlib (slow-marked)
    session.run(*PYTEST, "tests/test_cpython_conformance.py")
