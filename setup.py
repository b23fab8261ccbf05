"""Build csock._fastio from src/_fastio.pyx and csock._packet from src/packet/_packet.pyx.

CSOCK_DEBUG=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer and with Cython's
bounds and wraparound checks on (see README, "Sanitizer build").
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CSOCK_DEBUG", "") not in ("", "0")

compile_args = ["-O2", "-fno-strict-aliasing", "-Wno-unused-function"]
link_args: list = []
directives = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
    "freethreading_compatible": False,
}
if DEBUG:
    sanitize = "-fsanitize=address,undefined"
    compile_args = ["-O1", "-g", "-fno-omit-frame-pointer", sanitize,
                    "-fno-sanitize-recover=undefined"]
    link_args = [sanitize]
    directives.update(boundscheck=True, wraparound=True)


def extension(name: str, source: str) -> Extension:
    return Extension(
        name,
        sources=[source],
        include_dirs=["src", "src/includes"],
        define_macros=[("_GNU_SOURCE", "1")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


extensions = [
    extension("csock._fastio", "src/_fastio.pyx"),
    # the packet stack; cimports csock._fastio (declarations: src/csock/_fastio.pxd)
    extension("csock._packet", "src/packet/_packet.pyx"),
    # csock.uring: io_uring over the raw kernel ABI (src/includes/uring_abi.h; no liburing)
    extension("csock._uring", "src/uring/_uring.pyx"),
]


setup(
    # the three extensions compile side by side (build_ext --parallel)
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
    ext_modules=cythonize(
        extensions,
        include_path=["src", "."],
        compiler_directives=directives,
        compile_time_env={"CSOCK_DEBUG": DEBUG},
        nthreads=os.cpu_count() or 1,
    ),
)
