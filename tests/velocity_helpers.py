"""What the velocity tests share (tests/test_velocity.py,
tests/test_velocity_keys.py): the moment the clock is set to when a test
needs a known minute and day (12:00 on 15 March 2026, UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

START = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
