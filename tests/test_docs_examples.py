"""What the README and the docs promise, checked: every ```python block in them runs, prints
what its comments say, and type-checks under ``mypy --strict`` against this checkout's csock.

A block that needs something a test machine may lack says so in an HTML comment on the line
before its fence, ``<!-- example: needs root -->`` (CAP_NET_RAW); it still type-checks.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", "docs/guide.md", "docs/internals.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
NEEDS = re.compile(r"<!-- example: needs (\w+) -->\s*$")


@dataclass
class Example:
    document: str
    line: int            # of the opening fence, 1-based
    code: str
    needs: str | None

    @property
    def name(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def module(self) -> str:
        return re.sub(r"\W", "_", self.name)


def examples() -> list[Example]:
    found = []
    for document in DOCUMENTS:
        text = (ROOT / document).read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            needs = NEEDS.search(before)
            found.append(Example(document, line, match.group(1), needs and needs.group(1)))
    return found


def expected_output(code: str) -> list[str] | None:
    """The lines the block's comments promise: a ``print(...)`` statement's trailing
    ``# comment``, in order. None when a print has no such comment (nothing to compare)."""
    lines = code.splitlines()
    promised = []
    for node in ast.walk(ast.parse(code)):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", None) == "print"):
            source = lines[node.end_lineno - 1]
            if "#" not in source[node.end_col_offset:]:
                return None
            promised.append((node.lineno, source[node.end_col_offset:].split("#", 1)[1].strip()))
    return [text for _, text in sorted(promised)]


def has_raw_privilege() -> bool:
    import csock
    try:
        csock.RawSocket().close()
    except PermissionError:
        return False
    return True


EXAMPLES = examples()


def test_the_documents_have_examples():
    assert {e.document for e in EXAMPLES} >= {"README.md", "docs/guide.md"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_example_runs_and_prints_what_it_says(example):
    if example.needs == "root" and not has_raw_privilege():
        pytest.skip("needs CAP_NET_RAW (root) for raw sockets")
    assert example.needs in (None, "root"), f"unknown need {example.needs!r}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", example.code], capture_output=True, text=True,
                          timeout=60, cwd=str(ROOT), env=env, check=False)
    assert proc.returncode == 0, f"{example.name}\n{proc.stdout}\n{proc.stderr}"
    promised = expected_output(example.code)
    if promised is not None:
        assert proc.stdout.splitlines() == promised, example.name


def test_examples_type_check_strictly(tmp_path):
    """mypy --strict on every block, each as its own module, finding csock in this checkout
    (run from the root, as the README's editable install cannot show mypy the package)."""
    pytest.importorskip("mypy")
    files = []
    for example in EXAMPLES:
        path = tmp_path / f"{example.module}.py"
        path.write_text(example.code)
        files.append(str(path))
    env = dict(os.environ, MYPYPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--config-file", str(ROOT / "pyproject.toml"), *files],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT), env=env,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
