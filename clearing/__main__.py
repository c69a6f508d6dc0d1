"""``python -m clearing``: the same as the ``clearing`` command."""

import sys

from clearing.cli import main

sys.exit(main())
