"""The short soak (tests/soak_driver.py --short): fds identical and RSS within 5% after churn."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import csock

SOAK = Path(__file__).parent / "soak_driver.py"


@pytest.mark.slow      # and meaningless under ASan, whose quarantine holds freed memory
def test_short_soak_keeps_fds_and_memory_flat():
    env = dict(os.environ, PYTHONPATH=str(Path(csock.__file__).parent.parent))
    proc = subprocess.run([sys.executable, str(SOAK), "--short"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout.splitlines()[-1]
