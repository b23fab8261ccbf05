"""Run a snippet in a fresh interpreter under strace(1): which system calls csock makes."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import csock

needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

# recvfrom(2)'s number, for /proc/<pid>/task/<tid>/syscall (proc(5)): "nr arg1 ... arg6 sp pc"
RECVFROM_NR = {"x86_64": 45, "aarch64": 207}.get(platform.machine())
needs_recvfrom_nr = pytest.mark.skipif(RECVFROM_NR is None, reason=f"recvfrom's number on {platform.machine()} is not known")

# Snippet code: a writer that answers only once the reader sleeps in a blocking recvfrom, so
# the reader's try with MSG_DONTWAIT (if it made one) surely found nothing. Sleeping a while
# instead is not enough: a slow reader (sanitizers, a loaded CI machine) finds the reply there.
WAIT_FOR_BLOCKED_RECV = f"""
import socket, time
def wait_for_blocked_recv(tid, received, count):
    \"\"\"Until the reader has taken `count` messages and sleeps in recvfrom without MSG_DONTWAIT.\"\"\"
    while len(received) < count:
        time.sleep(0.0001)
    while True:
        with open(f"/proc/self/task/{{tid}}/syscall") as f:
            fields = f.read().split()
        if fields[0] == "{RECVFROM_NR}" and not int(fields[4], 16) & socket.MSG_DONTWAIT:
            return
        time.sleep(0.0001)
"""


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
