"""``python -m forward_auth`` is the ``forward-auth`` command."""

import sys

from .cli import main

sys.exit(main())
