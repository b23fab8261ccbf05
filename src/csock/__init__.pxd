# Marks src/csock as the package whose .pxd files the build compiles against (see _fastio.pxd).
