"""Fresh Python processes for tests that need one (a signal, a seccomp filter, a fuzzer, the
stdlib's own modules replaced at import): they import the same csock as the test run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import csock

# The directory that holds the csock package under test (the checkout, built in place, or
# the site-packages of a nox session).
CSOCK_HOME = str(Path(csock.__file__).resolve().parent.parent)


def child_env(**extra: str) -> dict[str, str]:
    """os.environ, with CSOCK_HOME first on PYTHONPATH and extra added."""
    path = os.pathsep.join(p for p in (CSOCK_HOME, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


def script_output(directory: Path, source: str, *args: str, prefix: tuple[str, ...] = (),
                  **env: str) -> list[str]:
    """Run source as a script (written to directory) in a fresh Python that imports this
    csock, with args and env added to its environment (and the command run under prefix,
    e.g. ("unshare", "-n")); the lines it printed. AssertionError with its stderr if it
    failed."""
    script = directory / "child.py"
    script.write_text(source)
    done = subprocess.run([*prefix, sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=60, env=child_env(**env))
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()
