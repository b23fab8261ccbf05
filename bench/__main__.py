"""python -m bench (from the checkout): the same as python -m csock bench."""
import sys

from . import main

sys.exit(main(prog="python -m bench"))
