# For type checkers only: the stdlib socket module's public names, less those csock replaces
# with its own. csock/__init__.py star-imports this under TYPE_CHECKING instead of `socket`,
# because mypy keeps a star-imported name's stdlib type even after csock rebinds the name.
from socket import *
from socket import __all__ as __all__

__all__.remove("socket")
__all__.remove("socketpair")
__all__.remove("create_connection")
__all__.remove("create_server")
__all__.remove("fromfd")
__all__.remove("has_dualstack_ipv6")
