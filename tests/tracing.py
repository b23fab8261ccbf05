"""Run a snippet in a fresh interpreter under strace(1): which system calls csock makes."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import csock

needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

# recvfrom(2)'s number, for /proc/<pid>/task/<tid>/syscall (proc(5)): "nr arg1 ... arg6 sp pc"
RECVFROM_NR = {"x86_64": 45, "aarch64": 207}.get(platform.machine())
# poll(2) and ppoll(2): with other threads in the process, a blocking csock receive sleeps in
# poll beside the wake eventfd (io.pyx) before its recvfrom
POLL_NRS = {"x86_64": (7, 271), "aarch64": (73,)}.get(platform.machine(), ())
needs_recvfrom_nr = pytest.mark.skipif(
    RECVFROM_NR is None, reason=f"recvfrom's number on {platform.machine()} is not known")

# Snippet code: `b` receives on an AF_UNIX datagram pair while a writer thread sends on `a`,
# answering only once the reader sleeps in a blocking recvfrom (or in the poll that precedes
# it, the process having two threads), so the reader's try with
# MSG_DONTWAIT (if it made one) surely found nothing. Sleeping a while instead is not enough: a
# slow reader (sanitizers, a loaded CI machine) finds the reply already there.
LATE_WRITER = f"""
import contextlib, os, socket, threading, time
import csock
a, b = csock.socketpair(csock.AF_UNIX, csock.SOCK_DGRAM)
received = []
reader = threading.get_native_id()

def wait_for_blocked_recv(count):
    \"\"\"Until the reader has taken `count` messages and sleeps in recvfrom without
    MSG_DONTWAIT, or in poll.\"\"\"
    while len(received) < count:
        time.sleep(0.0001)
    while True:
        with open(f"/proc/self/task/{{reader}}/syscall") as f:
            fields = f.read().split()
        if fields[0] == "{RECVFROM_NR}" and not int(fields[4], 16) & socket.MSG_DONTWAIT:
            return
        if fields[0] in {[str(n) for n in POLL_NRS]!r}:
            return
        time.sleep(0.0001)

@contextlib.contextmanager
def writing(writer):
    thread = threading.Thread(target=writer, daemon=True)    # a failing reader does not hang
    thread.start()
    yield
    thread.join()
"""


def strace(tmp_path: Path, code: str, syscalls: str, *args: str,
           inject: str | None = None) -> tuple[str, str]:
    """(trace, stdout) of `python -c code *args` under `strace -f -e trace=syscalls`, with this
    csock importable; `inject` is an `-e inject=` fault (strace(1): the kernel does not run
    that call, which returns the error given). Skips where ptrace is not permitted; fails when
    the snippet fails."""
    log = tmp_path / "trace"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(csock.__file__)))
    faults = ["-e", f"inject={inject}"] if inject else []
    proc = subprocess.run(["strace", "-f", "-e", f"trace={syscalls}", *faults, "-o", str(log),
                           sys.executable, "-c", code,
                           *args], capture_output=True, text=True, timeout=120, env=env)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    return joined_calls(log.read_text()), proc.stdout


def joined_calls(text: str) -> str:
    """strace's log with each call on one line: where another thread ran between a call's entry
    and its return, strace splits it into "<unfinished ...>" and "<... name resumed>" lines."""
    started: dict[str, str] = {}
    lines = []
    for line in text.splitlines():
        pid, _, rest = line.partition(" ")
        if line.endswith(" <unfinished ...>"):
            started[pid] = line[: -len(" <unfinished ...>")]
            continue
        resumed = re.match(r" *<\.\.\. \w+ resumed>(.*)", rest)
        if resumed and pid in started:
            line = started.pop(pid) + resumed.group(1)
        lines.append(line)
    lines.extend(started.values())       # calls still running when the log ended
    return "\n".join(lines) + "\n"
