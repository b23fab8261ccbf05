import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

LOOP_KINDS = ["asyncio", "uvloop"]


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


# --- csock.aio: every test that takes `run` runs once per event loop kind -------------------

@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    """The event loop a csock.aio test runs on: the default asyncio loop, then uvloop."""
    if request.param == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError as error:
            pytest.skip(f"uvloop is not installed ({error})")
    return str(request.param)


@pytest.fixture(params=["epoll", "uring"])
def aio_engine(request: pytest.FixtureRequest,
               monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine csock.aio's FramedStreams and servers get when made without one: the
    readiness path, then io_uring (skipped where the engine cannot run). A module opts in with
    ``pytestmark = pytest.mark.usefixtures("aio_engine")``."""
    import csock.aio.framed

    if request.param == "uring":
        from csock.aio._uring_engine import usable
        if not usable():
            pytest.skip("io_uring, or an operation csock.aio's engine needs, is unavailable")
    monkeypatch.setattr(csock.aio.framed, "default_engine", request.param)
    return str(request.param)


@pytest.fixture
def run(loop_kind: str) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """run(coro): coro on a new loop of loop_kind, closed afterwards; returns coro's result."""
    factory = None
    if loop_kind == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        return run_on_new_loop(coro, factory)
    return run


def run_on_new_loop(coro: Coroutine[Any, Any, Any], factory: Any = None) -> Any:
    """asyncio.Runner(loop_factory=factory).run(coro), on 3.10 too (Runner came in 3.11): a new
    loop runs coro, then the tasks left are cancelled, async generators closed, the loop closed."""
    if hasattr(asyncio, "Runner"):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)
    loop = (factory or asyncio.new_event_loop)()
    if factory is None:
        asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:    # (an empty gather() would bind to the current loop, not this one)
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            if factory is None:
                asyncio.set_event_loop(None)
            loop.close()
