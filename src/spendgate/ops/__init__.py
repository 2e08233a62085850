"""The operations of :class:`spendgate.BudgetManager`, one small class per
area (admission, leases, facts, limits and usage) over one store; the
manager composes them."""
