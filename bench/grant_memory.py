"""What grants and refund records cost in Redis memory (``make bench``'s
memory table): ``MEMORY USAGE … SAMPLES 0`` of the keys one user's grants
and charges leave.

A charge keeps a refund record (``c:<entry>``) for ``refund_window_seconds``
(30 days by default); its size grows with the ids, the model, and what the
charge drew from (nothing for a user without a balance, a few bytes for a
plain balance, a member and an amount per grant drawn on). A grant costs
its entries in three keys of the user's (``gr:u:``, ``go:u:``, ``gx:u:``)
while it lives.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

#: grants the measured user holds (half of them expiring)
GRANTS = 20
#: charges the measured user makes, each drawing on one grant
CHARGES = 20


async def grant_memory(budget: Any, charge_cost: Any) -> dict[str, float]:
    """Per grant held, and per refund record of a charge that drew on one
    grant, in bytes, on ``budget``'s Redis (its keys are left for the caller
    to delete with the rest of its prefix)."""
    client = budget.redis
    keys = budget.keys
    user = str(uuid.uuid4())
    expires = datetime.now(UTC) + timedelta(days=30)
    for i in range(GRANTS):
        await budget.add_credits(user, 1000, expires_at=expires if i % 2 else None)
    entries = []
    for _ in range(CHARGES):
        entries.append((await budget.record_spend(user, charge_cost)).entry_id)
    grant_bytes = 0
    for key in (keys.grants(user), keys.grant_order(user), keys.grant_expiry(user)):
        grant_bytes += int(await client.memory_usage(key, samples=0) or 0)
    records = [
        int(await client.memory_usage(keys.charge(entry), samples=0) or 0)
        for entry in entries
    ]
    return {
        "per_grant_bytes": grant_bytes / GRANTS,
        "per_refund_record_with_grant_bytes": sum(records) / len(records),
    }
