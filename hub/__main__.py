"""``python -m optimhub`` is the ``optimhub`` command."""

import sys

from .cli import main

sys.exit(main())
