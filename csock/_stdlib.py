"""The stdlib ``socket`` module, as csock found it: every csock module takes it from here.

This module runs when csock itself is first imported, before any program could do
``sys.modules["socket"] = csock``; after that swap, ``import socket`` in a csock module (one
imported lazily, such as csock.aio, or csock's ``__init__`` re-run by ``importlib.reload``)
would find csock itself. (tests/test_dropin.py checks that no other csock module imports it.)
"""
import socket as socket  # (re-exported: `from ._stdlib import socket as _std`)
