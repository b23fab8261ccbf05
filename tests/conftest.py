import os

import pytest


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(scope="session", autouse=True)
def no_fd_leaks():
    """The suite as a whole leaves the process's fd count as it found it."""
    before = len(_open_fds())
    yield
    after = len(_open_fds())
    assert after <= before + 2, f"fd count grew from {before} to {after}"
