"""Net spend in SQL: the rows of ``spendgate_ledger`` as the analytics count them.

The ledger's sign rule (migration 0003) is the kind's: every amount is
non-negative but an ``adjust``'s. Net spend is ``spend + settle - refund``,
plus the ``adjust`` rows of the scope asked for. :func:`net_facts` is one
``WITH`` clause, ``net``, whose rows are:

- each charge (``spend``, ``settle``) in the window, net of its refunds: a
  refund counts on its charge's row, so on the charge's user, project, model
  and day, however much later it was given (``calls`` 1);
- each refund whose charge is not in the table (not flushed yet, or
  dead-lettered), negative, on its own row's user, project and model, and
  on the day its ``window`` names (the charge's day, whose counters it
  lowered), else its own (``calls`` 0);
- each ``adjust`` of a **daily** window, signed, at 00:00 UTC of the day it
  corrected, with its ``scope`` (``calls`` 0). A monthly adjustment corrects
  the month's counter only: to correct spending, adjust the day (and the
  month, for its cap); counting both would count the correction twice, so
  the analytics count the day's.

Every other row has ``scope`` NULL. The queries over ``net`` keep the
adjustments of the scope they group by (:data:`ADJUST_SCOPE`). A charge
on a team's pool, and a refund of one, carry its ``team_id`` (NULL on
every other row): spending all the same, but not of its user's credits.

Each row's ``allowance`` is the part of its ``amount`` a plan's free
allowance paid, netted as the amount is: a refund gives back the balance's
and the grants' parts of a charge first and the allowance's last
(``lua/_grants.lua``, ``give_back``), so of a charge of ``amount`` that the
allowance paid ``allowance_used`` of, refunded ``refunded`` in all, the
allowance still paid ``least(allowance_used, amount - refunded)``. A refund
whose charge is not in the table and an adjustment count none (a refund's
row does not say which part it gave back; an adjustment pays nothing).

The window is ``$1`` (inclusive) to ``$2`` (exclusive). Every part reads the
table through ``occurred_at >= $1`` (its index): a refund is given after its
charge, an adjustment is written on or after the day it corrects.
"""

from __future__ import annotations

from spendgate.core.protocol import SPEND_KINDS, LedgerKind

#: the group -> the adjustments that count in it (model: none, an adjustment
#: has no model; the totals over everyone: the global counter's)
ADJUST_SCOPE: dict[str, str | None] = {
    "user": "user",
    "project": "project",
    "model": None,
    "all": "global",
}

_CHARGES = ", ".join(f"'{kind}'" for kind in SPEND_KINDS)
_REFUND = f"'{LedgerKind.REFUND}'"
_ADJUST = f"'{LedgerKind.ADJUST}'"


def _day(row: str) -> str:
    """The UTC day a row's ``window`` names, as a timestamptz (its 00:00);
    NULL when it names none (a month, or no window)."""
    window = f'{row}."window"'
    return (
        f"CASE WHEN {window} ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$'"
        f" THEN {window}::date::timestamp AT TIME ZONE 'UTC' END"
    )


NET_FACTS = f"""
WITH refunded AS (
    SELECT link_id, sum(amount) AS amount FROM spendgate_ledger
    WHERE kind = {_REFUND} AND link_id IS NOT NULL AND occurred_at >= $1
    GROUP BY link_id
), net AS (
    SELECT c.user_id, c.project_id, c.model, c.occurred_at AS at,
        c.amount - coalesce(r.amount, 0) AS amount,
        coalesce(r.amount, 0) AS refunded, 0::numeric AS adjusted,
        least(coalesce(c.allowance_used, 0), c.amount - coalesce(r.amount, 0))
            AS allowance,
        c.input_tokens, c.output_tokens, 1 AS calls, NULL::text AS scope,
        c.team_id
    FROM spendgate_ledger c LEFT JOIN refunded r ON r.link_id = c.entry_id
    WHERE c.kind IN ({_CHARGES}) AND c.occurred_at >= $1 AND c.occurred_at < $2
  UNION ALL
    SELECT f.user_id, f.project_id, f.model, coalesce(d.at, f.occurred_at),
        -f.amount, f.amount, 0, 0, NULL, NULL, 0, NULL, f.team_id
    FROM spendgate_ledger f CROSS JOIN LATERAL (SELECT {_day("f")} AS at) d
    WHERE f.kind = {_REFUND} AND f.occurred_at >= $1
        AND coalesce(d.at, f.occurred_at) >= $1
        AND coalesce(d.at, f.occurred_at) < $2
        AND NOT EXISTS (SELECT 1 FROM spendgate_ledger c
                        WHERE c.entry_id = f.link_id AND c.kind IN ({_CHARGES}))
  UNION ALL
    SELECT a.user_id, a.project_id, NULL, d.at, a.amount, 0, a.amount, 0,
        NULL, NULL, 0, a.scope, NULL
    FROM spendgate_ledger a CROSS JOIN LATERAL (SELECT {_day("a")} AS at) d
    WHERE a.kind = {_ADJUST} AND a.occurred_at >= $1
        AND d.at >= $1 AND d.at < $2
)
"""


def adjust_filter(group: str) -> str:
    """The condition on ``net`` that keeps the charges, the refunds and the
    adjustments of ``group``'s scope (see :data:`ADJUST_SCOPE`)."""
    scope = ADJUST_SCOPE[group]
    if scope is None:
        return "scope IS NULL"
    return f"(scope IS NULL OR scope = '{scope}')"
