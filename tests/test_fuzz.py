"""A short coverage-guided fuzzing run of every decoder (tests/fuzz_driver.py, atheris): no crash,
no undocumented exception. The documented long run is 10M inputs per target."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import csock

FUZZ = Path(__file__).parent / "fuzz_driver.py"


def available(target: str) -> bool:
    if target == "spp":
        return hasattr(csock, "SPPHeader")
    return True


@pytest.mark.parametrize("target", ["frames", "packet", "spp"])
def test_short_fuzz_run(target, tmp_path):
    pytest.importorskip("atheris")
    if not available(target):
        pytest.skip(f"the {target} decoder is not part of this build")
    env = dict(os.environ, PYTHONPATH=str(Path(csock.__file__).parent.parent))
    runs = 20_000
    proc = subprocess.run([sys.executable, str(FUZZ), target, f"-runs={runs}", "-seed=1",
                           f"-artifact_prefix={tmp_path}/"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert f"fuzz {target}: {runs} inputs" in proc.stdout, proc.stdout[-2000:]
