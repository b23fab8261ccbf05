"""API §8: another Cython module can `cimport csock._fastio` and call its C functions."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import csock

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    pytest.importorskip("Cython")
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler")
    build = tmp_path_factory.mktemp("downstream")
    shutil.copy(HERE / "downstream" / "use_fastio.pyx", build)
    csock_root = Path(csock.__file__).parent.parent     # where csock/_fastio.pxd lives
    (build / "setup.py").write_text(
        "from setuptools import setup, Extension\n"
        "from Cython.Build import cythonize\n"
        f"setup(ext_modules=cythonize([Extension('use_fastio', ['use_fastio.pyx'])],"
        f" include_path=[{str(csock_root)!r}], language_level=3))\n"
    )
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=build,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = next(build.glob("use_fastio*.so"))
    spec = importlib.util.spec_from_file_location("use_fastio", built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pxd_ships_with_the_package():
    assert (Path(csock.__file__).parent / "_fastio.pxd").is_file()


def test_downstream_extension_calls_the_c_api(downstream):
    a, b = csock.socketpair()
    c, d = csock.socketpair()
    with a, b, c, d:
        a.sendall(b"through C")
        assert downstream.echo_exactly(b, c, 9) == b"through C"
        assert d.recv_exactly(9) == b"through C"
        a.close()
        with pytest.raises(csock.IncompleteReadError):
            downstream.echo_exactly(b, c, 1)


def test_downstream_builds_views(downstream):
    view = downstream.view_of(b"made in C")
    assert isinstance(view, csock.MessageView) and view == b"made in C"
