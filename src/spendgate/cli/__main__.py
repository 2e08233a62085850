"""``python -m spendgate.cli``: the same as the ``spendgate`` command."""

from __future__ import annotations

import sys

from spendgate.cli import main

sys.exit(main())
