"""Two hosts on one machine: network namespaces joined by a veth pair (needs root and ip)."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def veth_pair() -> Iterator[dict[str, str]]:
    """Namespaces A (10.77.0.1/24, fd77::1) and B (10.77.0.2/24, fd77::2) joined by veth."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    tag = uuid.uuid4().hex[:6]
    a, b = f"csa{tag}", f"csb{tag}"
    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
        ip("link", "add", f"va{tag}", "netns", a, "type", "veth", "peer",
           "name", f"vb{tag}", "netns", b)
        for ns, dev, v4, v6 in ((a, f"va{tag}", "10.77.0.1/24", "fd77::1/64"),
                                (b, f"vb{tag}", "10.77.0.2/24", "fd77::2/64")):
            ip("-n", ns, "addr", "add", v4, "dev", dev)
            ip("-n", ns, "addr", "add", v6, "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as error:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot set up network namespaces here: {error.stderr.decode().strip()}")
    try:
        yield {"a": a, "b": b, "a4": "10.77.0.1", "b4": "10.77.0.2",
               "a6": "fd77::1", "b6": "fd77::2"}
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_netns(ns: str, argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)
