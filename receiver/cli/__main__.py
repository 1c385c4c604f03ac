"""``python -m receiver.cli``: the same as the ``receiver`` console script."""

import sys

from receiver.cli import main

sys.exit(main())
