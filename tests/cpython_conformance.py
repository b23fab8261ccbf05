"""Run CPython's own socket test suites with the stdlib or with csock as `socket`.

    python tests/cpython_conformance.py stdlib|csock OUT.json [MODULE ...]

Writes {test id: "pass" | "fail" | "error" | "skip: reason"} for every test of the modules
(default: test.test_socket and test.test_asyncio.test_sock_lowlevel). With `csock`, csock is
installed as sys.modules["socket"] before the test modules are imported, so every
`socket.socket(...)`, `socket.socketpair()`, ... in them makes csock sockets.
"""
from __future__ import annotations

import faulthandler
import json
import sys
import unittest

MODULES = ["test.test_socket", "test.test_asyncio.test_sock_lowlevel"]

# Tests excluded from BOTH runs, with the reason.
EXCLUDED = {
    # No vsock transport here: the stdlib's own run blocks forever in accept/connect.
    "VSOCK": "vsock tests hang with the stdlib on this machine (no vsock transport)",
}


class Recorder(unittest.TestResult):
    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, str] = {}

    def addSuccess(self, test):
        self.outcomes[test.id()] = "pass"

    def addFailure(self, test, err):
        self.outcomes[test.id()] = "fail: " + self._exc_info_to_string(err, test)[-1500:]

    def addError(self, test, err):
        self.outcomes[getattr(test, "id", lambda: str(test))()] = "error: " + self._exc_info_to_string(err, test)[-1500:]

    def addSkip(self, test, reason):
        self.outcomes[test.id()] = f"skip: {reason}"

    def addExpectedFailure(self, test, err):
        self.outcomes[test.id()] = "pass"

    def addUnexpectedSuccess(self, test):
        self.outcomes[test.id()] = "fail: unexpected success"


def excluded(test_id: str) -> bool:
    return any(pattern in test_id for pattern in EXCLUDED)


def flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def main() -> None:
    mode, out = sys.argv[1], sys.argv[2]
    modules = sys.argv[3:] or MODULES
    if mode == "csock":
        import csock
        sys.modules["socket"] = csock
    faulthandler.dump_traceback_later(600, exit=True)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(t for name in modules
                               for t in flatten(loader.loadTestsFromName(name))
                               if not excluded(t.id()))
    result = Recorder()
    suite.run(result)
    with open(out, "w") as f:
        json.dump(result.outcomes, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
