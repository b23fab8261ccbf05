"""Sphinx configuration of csock's API reference: autodoc over the built package.

Build it from a checkout whose extension is built in place (``python setup.py build_ext
--inplace``): ``sphinx-build -W -b html docs/api /tmp/csock-api``.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))        # this checkout's csock, not an installed one

import csock

project = "csock"
release = version = csock.__version__
copyright = "2026, the csock contributors"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]

# Cython's embedded signatures (embedsignature) give the C declaration: the function's own
# first parameter ``sock`` (the socket the method is bound to), C types ("bint gro=False")
# and the names of C constants used as defaults.
_C_TYPES = re.compile(r"\b(?:bint|bool|int|unsigned|long|double|float|Py_ssize_t|size_t|object|"
                      r"bytes|str|list|dict|tuple|uint8_t|uint16_t|uint32_t|int64_t)\s+(?=\w)")

_C_CONSTANTS = {"=MMSG_MAX": "=1024"}


def _python_signature(app, what, name, obj, options, signature, return_annotation):
    if signature is None:
        return None
    signature = _C_TYPES.sub("", signature)
    for constant, value in _C_CONSTANTS.items():
        signature = signature.replace(constant, value)
    if what == "method":
        signature = re.sub(r"^\((?:sock|self)(?:, |(?=\)))", "(", signature)
    return signature, return_annotation


def setup(app):
    app.connect("autodoc-process-signature", _python_signature)
