"""spendgate's hot-path benchmark: ``python -m bench`` (``make bench``).

One run measures, interleaved in rounds so machine noise hits every subject
alike, against the real Redis: the round-trip floor (a bare ``PING`` through
the same ``redis.asyncio`` client stack), spendgate's hot-path calls, and the
peer coreason-budget 0.4.1 (in its own virtualenv and process, because its
licence is non-commercial: it is never a dependency of spendgate). Results go
to ``bench/results/``: JSON with machine and Redis ``INFO``, a markdown table
and a PNG chart.

This package must not import spendgate at module level: ``bench.measure`` is
also imported by the peer's worker, in a virtualenv without spendgate.
"""

from __future__ import annotations
