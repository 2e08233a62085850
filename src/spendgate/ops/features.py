"""Features: ``check_feature`` and ``use_feature``.

A feature's value is the user's plan's ``features`` entry, read by bursar's
truthy rule (absent, ``None`` and ``False`` are "no"; ``0`` and ``""`` are
values). A feature limit (``feature_limits``) counts the calls of
``use_feature`` per calendar period in UTC, as bursar counts them: every
user's count of a ``monthly`` limit starts again on the 1st, whatever their
plan's cycle, and a plan change does not start it again. ``use_feature``
counts one call in one script (``lua/use_feature.lua``): at ``max_calls``,
``deny`` refuses and counts nothing; ``warn`` and ``notify`` admit, and the
first call past ``max_calls`` in a period writes one ``credits.cap_warning``
event (scope ``user``, window the limit's period, data: the feature,
``max_calls``, the period's start and the calls counted).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from spendgate.core.ids import check_id, user_id_of
from spendgate.core.protocol import Reply
from spendgate.core.windows import from_ms
from spendgate.errors import (
    FeatureLimitExceededError,
    FeatureNotEntitledError,
    IdempotencyConflictError,
    InvalidArgumentError,
)
from spendgate.ops.base import fingerprint, text
from spendgate.ops.plans import Plans
from spendgate.plans.cache import split_assignment
from spendgate.plans.cycle import Period, calendar_window, period_code
from spendgate.plans.models import FeatureCheck, FeatureLimit, Plan, has_feature
from spendgate.pricing.book import NAME_MAX

#: times a call is made again when the user's plan was not the one expected
_ATTEMPTS = 3


class Features(Plans):
    """``check_feature`` and ``use_feature``."""

    async def check_feature(self, user_id: Any, feature: str) -> FeatureCheck:
        """The user's feature: whether the plan has it, its value, and for a
        limited feature the calls left this period. Reads; changes nothing."""
        user = user_id_of(user_id, self._max_id)
        name = check_id("feature", feature, NAME_MAX)
        _, plans = await self._plans_in_force()
        cache = self._plans()
        guess = cache.guess(user)
        keys = self.keys.of(user)
        plan_key = keys.user_plan(user)
        for _ in range(_ATTEMPTS):
            now_ms = self._now_ms()
            pid, plan, limit = _feature_of(guess, plans, name)
            window = None if limit is None else calendar_window(limit.period, now_ms)
            if limit is None or window is None:
                counter, mode = plan_key, ""
            else:
                code = period_code(limit.period, window.start_ms)
                counter, mode = keys.feature_use(user, code), "h"
            reply = await self._store.run(
                "plan_read", (plan_key, counter), (mode, "c:" + name if mode else "")
            )
            found = "" if reply[0] is None else text(reply[0])
            if found != guess:  # another plan than expected: read again
                cache.remember(user, found)
                guess = found
                continue
            used = 0 if reply[1] is None else int(reply[1])
            return _check(user, name, pid, plan, limit, window, used)
        raise InvalidArgumentError("the user's plan kept changing during the check")

    async def use_feature(
        self, user_id: Any, feature: str, idempotency_key: str | None = None
    ) -> FeatureCheck:
        """Count one call of a feature of the user's plan, atomically.

        :raise FeatureLimitExceededError: ``max_calls`` were made this period
            and the limit's action is ``deny`` (nothing counted)
        :raise FeatureNotEntitledError: the user's plan neither has the
            feature nor limits it, or the user has no plan
        :raise IdempotencyConflictError: the key was used for another call
        """
        user = user_id_of(user_id, self._max_id)
        name = check_id("feature", feature, NAME_MAX)
        key = ""
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
        _, plans = await self._plans_in_force()
        cache = self._plans()
        guess = cache.guess(user)
        for _ in range(_ATTEMPTS):
            now_ms = self._now_ms()
            pid, plan, limit = _feature_of(guess, plans, name)
            entitled = limit is not None or (
                plan is not None and has_feature(plan.features, name)
            )
            window = None
            if entitled and limit is not None:
                window = calendar_window(limit.period, now_ms)
            keys, args = self._use_call(user, name, key, guess, limit, window, now_ms)
            reply = await self._store.run("use_feature", keys, args)
            code = reply[0]
            if code == Reply.STALE_PRICE:  # another plan than expected: again
                guess = text(reply[1])
                cache.remember(user, guess)
                continue
            if code == Reply.CONFLICT:
                raise IdempotencyConflictError(key)
            if code == Reply.REFUSED:
                raise _limited(user, name, limit, window, reply)
            if code == Reply.OK and not entitled:
                raise FeatureNotEntitledError(user, name, pid)
            used, over, *at = text(reply[1]).split("|")
            if code == Reply.REPLAYED and at and limit is not None:
                # (a replay answers for the period its call was counted in;
                # a record from before the time was kept has none)
                window = calendar_window(limit.period, int(at[0]))
            return _check(
                user,
                name,
                pid,
                plan,
                limit,
                window,
                int(used),
                over=over == "1",
                replayed=code == Reply.REPLAYED,
            )
        raise InvalidArgumentError("the user's plan kept changing during the call")

    def _use_call(
        self,
        user: str,
        name: str,
        key: str,
        guess: str,
        limit: FeatureLimit | None,
        window: Period | None,
        now_ms: int,
    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """The KEYS and ARGV of ``use_feature.lua``; without a window (not
        limited, or not the plan's) the script checks the plan only."""
        bucket = self.keys.of(user)
        plan_key = bucket.user_plan(user)
        digest = fingerprint("use_feature", user, name) if key else ""
        # no key: the plan key stands in (see use_feature.lua's KEYS[1])
        ikey = bucket.caller_idempotency(key) if key else plan_key
        if limit is None or window is None:
            keys = (ikey, plan_key, plan_key)  # (the third is not touched)
            return keys, (now_ms, digest, user, name, guess, "", "", "", 0, "")
        start = from_ms(window.start_ms).isoformat()
        data = (
            f'{{"feature":{json.dumps(name)},"max_calls":{limit.max_calls},'
            f'"period_start":"{start}","used":'
        )
        counter = bucket.feature_use(user, period_code(limit.period, window.start_ms))
        ttl_ms = window.end_ms + self._retention_ms - now_ms
        args = (
            now_ms,
            digest,
            user,
            name,
            guess,
            limit.max_calls,
            limit.action,
            limit.period,
            ttl_ms,
            data,
        )
        return (ikey, plan_key, counter), args


def _limited(
    user: str,
    name: str,
    limit: FeatureLimit | None,
    window: Period | None,
    reply: Any,
) -> FeatureLimitExceededError:
    """The refusal ``{REFUSED, used, max_calls}`` as its error."""
    assert limit is not None and window is not None  # (only a limit refuses)
    return FeatureLimitExceededError(
        user, name, int(reply[2]), int(reply[1]), limit.period, from_ms(window.end_ms)
    )


def _feature_of(
    assignment: str, plans: Mapping[str, Plan], name: str
) -> tuple[str | None, Plan | None, FeatureLimit | None]:
    """The plan id, the plan (``None`` when not in force) and the feature's
    limit of a user's plan as stored."""
    parts = split_assignment(assignment)
    if parts is None:
        return None, None, None
    plan = plans.get(parts[1])
    return parts[1], plan, None if plan is None else plan.feature_limits.get(name)


def _check(
    user: str,
    name: str,
    pid: str | None,
    plan: Plan | None,
    limit: FeatureLimit | None,
    window: Period | None,
    used: int,
    *,
    over: bool = False,
    replayed: bool = False,
) -> FeatureCheck:
    # (a copy: the plan is shared by every call)
    value = None if plan is None else copy.deepcopy(plan.features.get(name))
    has = plan is not None and has_feature(plan.features, name)
    if limit is None or window is None:
        return FeatureCheck(user, name, pid, has, value, replayed=replayed)
    return FeatureCheck(
        user,
        name,
        pid,
        has,
        value,
        limit=limit.max_calls,
        used=used,
        remaining=max(0, limit.max_calls - used),
        period=limit.period,
        resets_at=from_ms(window.end_ms),
        action=limit.action,
        over_limit=over,
        replayed=replayed,
    )
