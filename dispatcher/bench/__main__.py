"""``python -m dispatcher.bench`` is ``hooklane bench``."""

import sys

from dispatcher.bench.runner import main

sys.exit(main(sys.argv[1:]))
