"""``python -m stapled``: the same as the ``stapled`` command."""

import sys

from .cli import main

sys.exit(main())
