"""API §1 proof: CPython's own test.test_socket and test.test_asyncio.test_sock_lowlevel, run
with csock substituted for `socket`, pass every test they pass with the stdlib here, and skip
nothing the stdlib runs (tests/cpython_conformance.py does the runs, in two processes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import csock

RUNNER = Path(__file__).parent / "cpython_conformance.py"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    pytest.importorskip("test.test_socket", reason="CPython's test package is not installed")
    out = tmp_path_factory.mktemp("conformance")
    env = dict(os.environ, PYTHONPATH=str(Path(csock.__file__).parent.parent))
    runs = {mode: subprocess.Popen([sys.executable, str(RUNNER), mode, str(out / f"{mode}.json")],
                                   cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for mode in ("stdlib", "csock")}
    for mode, proc in runs.items():
        output, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{mode} run failed:\n{output.decode()[-3000:]}"
    return {mode: json.loads((out / f"{mode}.json").read_text()) for mode in runs}


@pytest.mark.slow
def test_every_stdlib_pass_passes_with_csock(outcomes):
    stdlib, with_csock = outcomes["stdlib"], outcomes["csock"]
    passed = [t for t, outcome in stdlib.items() if outcome == "pass"]
    assert len(passed) > 600 and any("test_sock_lowlevel" in t for t in passed)
    regressions = {t: with_csock.get(t, "not run") for t in passed if with_csock.get(t) != "pass"}
    assert not regressions, json.dumps(regressions, indent=1)[:6000]


@pytest.mark.slow
def test_csock_skips_nothing_the_stdlib_runs(outcomes):
    stdlib, with_csock = outcomes["stdlib"], outcomes["csock"]
    extra_skips = {t: o for t, o in with_csock.items()
                   if o.startswith("skip") and not stdlib.get(t, "").startswith("skip")}
    assert not extra_skips, extra_skips
    assert set(with_csock) == set(stdlib)
