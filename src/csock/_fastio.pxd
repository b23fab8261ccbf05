# The declarations csock._fastio is compiled against. With src/ first on the include path,
# Cython finds this package (src/csock/__init__.pxd) before the real one, so the build sees
# the public C API (csock/_fastio.pxd, which ships for downstream `cimport csock._fastio`)
# plus, from the .pxd beside each core file (uvloop's handles/*.pxd), what that file offers
# the others and csock._packet (src/packet/). These internal declarations do not ship: a
# downstream module sees only the public ones. framing.pyx and metadata.pyx offer the others
# nothing.
include "../../csock/_fastio.pxd"
include "fastio/errors.pxd"
include "fastio/members.pxd"
include "fastio/sockref.pxd"
include "fastio/io.pxd"
include "fastio/buffers.pxd"
include "fastio/stream.pxd"
include "fastio/zerocopy.pxd"
include "fastio/address.pxd"
include "fastio/mmsg.pxd"
include "fastio/datagram.pxd"
include "fastio/batch_send.pxd"
include "fastio/batch_recv.pxd"
include "fastio/offload.pxd"
include "fastio/spp.pxd"
