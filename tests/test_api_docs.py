"""The API reference (docs/api, Sphinx autodoc over this checkout's csock) builds with
warnings as errors and documents every public name: csock's own classes, functions and
exceptions with their methods and attributes, csock.aio and csock.packet."""
from __future__ import annotations

import inspect
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import csock
import csock.aio
import csock.packet

ROOT = Path(__file__).resolve().parent.parent
# names csock defines over the stdlib's
OWN_OVER_STDLIB = {"socket", "socketpair", "create_connection", "create_server", "fromfd",
                   "has_dualstack_ipv6"}


def public_names() -> set[str]:
    """Every public name users reach: module-level names and each class's own members."""
    found = set()
    modules = {
        "csock": [n for n in csock.__all__ if n not in socket.__all__] + sorted(OWN_OVER_STDLIB),
        "csock.aio": [n for n, v in vars(csock.aio).items()
                      if not n.startswith("_") and not inspect.ismodule(v) and n != "annotations"],
        "csock.packet": csock.packet.__all__,
    }
    for module_name, names in modules.items():
        module = sys.modules[module_name]
        for name in names:
            found.add(f"{module_name}.{name}")
            value = getattr(module, name)
            if inspect.isclass(value):
                found.update(f"{module_name}.{name}.{member}" for member in vars(value)
                             if not member.startswith("_"))
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("sphinx")
    out = tmp_path_factory.mktemp("apihtml")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(ROOT / "docs" / "api"), str(out)],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_reference_builds_without_warnings(built):
    assert (built / "index.html").is_file()


def test_every_public_name_is_documented(built):
    from sphinx.util.inventory import InventoryFile
    with open(built / "objects.inv", "rb") as stream:
        kinds = InventoryFile.load(stream, "", lambda base, uri: uri)    # {role: {name: ...}}
    documented = {name for kind in kinds.values() for name in kind}
    missing = sorted(public_names() - documented)
    assert not missing, f"public but not in the API reference: {missing}"


def resolve(qualified: str) -> object:
    """The object a dotted public name names (the longest module prefix, then attributes)."""
    parts = qualified.split(".")
    for split in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is not None:
            obj: object = module
            for attribute in parts[split:]:
                obj = inspect.getattr_static(obj, attribute)
            return obj
    raise LookupError(qualified)


def test_no_docstring_repeats_its_signature():
    """Cython's embedsignature writes a function's signature as its docstring's first line;
    a hand-written one after it would repeat it (and drift from it: send_batch's omitted
    segment_size)."""
    repeated = []
    for qualified in sorted(public_names()):
        doc = getattr(resolve(qualified), "__doc__", None)
        if not isinstance(doc, str):
            continue
        name = qualified.rsplit(".", 1)[-1]
        paragraphs = [p.strip() for p in doc.split("\n\n")]
        if len(paragraphs) > 1 and paragraphs[0].startswith(f"{name}(") \
                and paragraphs[1].startswith(f"{name}("):
            repeated.append(qualified)
    assert not repeated, f"docstrings that repeat the embedded signature: {repeated}"
