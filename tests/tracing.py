"""Run a snippet in a fresh interpreter under strace(1): which system calls csock makes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import csock

needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")


def strace(tmp_path: Path, code: str, syscalls: str, *args: str) -> tuple[str, str]:
    """(trace, stdout) of `python -c code *args` under `strace -f -e trace=syscalls`, with this
    csock importable. Skips where ptrace is not permitted; fails when the snippet fails."""
    log = tmp_path / "trace"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(csock.__file__)))
    proc = subprocess.run(["strace", "-f", "-e", f"trace={syscalls}", "-o", str(log), sys.executable, "-c", code,
                           *args], capture_output=True, text=True, timeout=120, env=env)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    return log.read_text(), proc.stdout
