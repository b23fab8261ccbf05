import os

import pytest


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _describe(fds: set[int]) -> list[str]:
    described = []
    for fd in sorted(fds):
        try:
            described.append(f"{fd}: {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return described


@pytest.fixture(scope="session", autouse=True)
def no_fd_leaks():
    """The suite as a whole leaves the process's fd count as it found it (csock's wake
    eventfd, made once per process on first need, aside)."""
    before = _open_fds()
    yield
    after = _open_fds()
    new = _describe(after - before)
    leaked = [d for d in new if not d.endswith("anon_inode:[eventfd]")]
    assert len(leaked) <= 2, f"fd count grew from {len(before)} to {len(after)}: {new}"
