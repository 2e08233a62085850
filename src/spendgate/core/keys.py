"""Redis key names, built in this one place.

Every key of a deployment starts with ``"<key_prefix>:{sg}:"``: the prefix
separates deployments sharing one Redis, the ``{sg}`` hash tag keeps all of a
deployment's keys on one cluster slot. A sharded deployment
(``cluster_buckets``: :mod:`spendgate.core.shards`) has one such base per
bucket of users, ``"<key_prefix>:{sg:<bucket>}:"``, and the layout below
each is the same. Ids are always the last part of a key,
after a fixed-format structural part, so no id can alias another's key.

The scripts build the keys they touch from the same parts: they receive
``BASE`` and every ``K_*`` and ``S_*`` constant of :func:`lua_constants` when
they are loaded. The layout, below ``BASE``::

    d:<yyyymmdd>:<s>:<id>  string: spent in that day (of the window time zone)
    m:<yyyymm>:<s>:<id>    string: spent in that month
    w:<yyyymmdd>:<s>:<id>  string: spent in the ISO week starting that Monday
                           (kept only when weekly caps are on)
    v:<s>:<id>             hash: the sliding minute of a scope with a
                           per-minute cap: spend per second (field: the
                           second since the epoch), ``t`` the latest second
                           written, ``k`` until when its kill switch refuses
                           (ms); gone a minute after its last write
    r:<s>:<id>             string: held by pending holds (absent at zero)
    l:<s>:<id>             string: cap overrides, "<daily>|<monthly>
                           [|<per_minute>[|<weekly>[|<action>]]]", a part
                           empty for the configured default; the action
                           (with cap_actions): its letter, then the
                           thresholds in millionths of the cap, "w500000,
                           800000,1000000"
    cx:d:<yyyymmdd>:<s>:<id>, cx:m:<yyyymm>:<s>:<id>
                           string: the highest threshold (millionths) whose
                           event that day's or month's counter of a scope
                           with a cap action has written (expires with the
                           counter)
    b:u:<id>               string: a user's balance (absent: none is kept),
                           "<balance>" or, while the user holds grants,
                           "<balance>|<granted>|<next expiry ms>"
    gr:u:<id>              hash: a user's live grants, member -> remaining
    go:u:<id>              zset: the same members scored by priority, in the
                           order charges draw on them
    gx:u:<id>              zset: the expiring ones scored by expiry (ms)
    gdue                   zset: users scored by their next grant expiry (ms)
    c:<entry>              string: what a refund of that charge needs, kept
                           the refund window (a team charge's entry id is
                           "<id>.<team>": lua/team_refund.lua)
    fw:<id>                string, left by a rebucketing: "<bucket>:<run>",
                           the bucket a charge's or a finished hold's
                           record moved to (its user's) where its entry or
                           lease id names another (kept as long)
    h:<lease>              hash: one hold (``st``: a HoldState)
    holds                  zset: pending lease ids scored by expiry (ms)
    due                    string: no pending hold expires before this (ms)
    i:c:<key>              string: an idempotency record of the caller's key
    i:a:<entry>            string: the record of a fact given no key
    ledger                 stream: one entry per fact
    plans                  hash: the plans set with ``set_plan``, plan id ->
                           ``{"period": <cycle>, "plan": <bursar's plan>}``
    plans:rev              string: bumped by every ``set_plan`` (absent: no
                           plan was ever set; read with the active price book)
    up:<user>              string: the user's plan, "<anchor_ms>|<plan id>"
                           (the cycle's anchor: when it was assigned)
    al:<start_ms>:<user>   string: the user's allowance used in the cycle
                           period starting at start_ms, micro-units (the
                           charge path consumes it; expires after the period)
    fu:<period>:<user>     hash: the user's feature calls in one calendar
                           period (``d``/``w``/``m``/``y`` and its first day,
                           ``m20250101``): ``c:<feature>`` the calls counted,
                           ``w:<feature>`` present once the over-limit event
                           was written (expires after the period)
    ml:<s>:<n>:<model>:<id>  string: the per-model caps of one scope,
                           "<daily>|<monthly>", a part empty for none; <n>
                           is the model id's length in bytes, so no model
                           id runs into the scope's id (kept only with
                           model_caps: lua/_models.lua)
    md:<yyyymmdd>:<s>:<n>:<model>:<id>  string: spent on that model that day
    mm:<yyyymm>:<s>:<n>:<model>:<id>    string: that month
    mr:<s>:<n>:<model>:<id>  string: held by pending holds taken for the
                           model (absent at zero)
    pb:next                string: the last price book version published
    pb:active              string: the active price book version
    pb:v:<n>               string: price book version n (JSON, immutable)
    pb:m:<n>               string: its label, time and digest (JSON)
    events                 stream: the events scripts write themselves
                           (thresholds crossed, kill switches, low balance)
    events:dead            stream: events no handler or webhook took after
                           every retry, with the error
    events:dispatchers:<g> set: the dispatchers (consumer names) of consumer
                           group <g> that heartbeat
    events:dispatcher:<c>  string: one dispatcher's heartbeat, expires unless
                           renewed (its status, for operators)
    tpool:<team>           hash: a team: ``n`` its name, ``c`` when it was
                           created (ms), ``b`` its shared pool's balance and
                           ``h`` what its pending holds keep of it
                           (micro-units)
    tmem:<team>            hash: its members, user id -> "<role>|<daily
                           cap>|<monthly cap>" (micro-units, -1: none)
    theld:<team>           hash: user id -> what that member's pending team
                           holds keep (absent at zero)
    tholds:<team>          zset: its pending holds, "<amount>|<length of the
                           lease id>|<lease><user>" scored by expiry (ms):
                           the team's own purge
    tday:<yyyymmdd>:<team> hash: user id -> spent on the team's pool that day
    tmon:<yyyymm>:<team>   hash: user id -> spent on it that month
                           (a member id is a hash field and a team id the
                           last part of a key: neither can alias another's)
    ph:u:<id>              string: what the user's pending holds on team
                           pools keep (absent at zero): the part of
                           r:u:<id> that keeps none of the user's balance
    esc:<s>:<id>:<window>  hash, sharded only: a shared cap lent out
                           (spendgate.core.escrow_keys says its fields)
    layout                 string, the root's, written by a rebucketing
                           (spendgate.rebucket): the bucket count the keys
                           are laid out for, "<from>><to>:<run>" while one
                           runs
    rb:<run>:<counter>     string, the root's: that run's split of a
                           project's or the platform's counter over the
                           new buckets (JSON: spendgate.rebucket.shared;
                           expires with the counter)
    ledger:dead            stream: entries Postgres refused, with the error
    ledger:flushers        set: the flushers (consumer names) that heartbeat
    ledger:flusher:<name>  string: one flusher's heartbeat, expires unless
                           renewed (its status, for operators)

``<s>`` is the scope letter of :data:`SCOPE_LETTERS` (the global scope's id is
empty).
"""

from __future__ import annotations

#: scope name -> the letter used in keys
SCOPE_LETTERS = {"user": "u", "project": "p", "global": "g"}

#: the structural part of each kind of key, below the deployment's base.
#: Lua: ``K_<NAME>``.
KEY_PARTS = {
    "DAY": "d:",
    "MONTH": "m:",
    "WEEK": "w:",
    "MINUTE": "v:",
    "HELD": "r:",
    "LIMITS": "l:",
    "BALANCE": "b:u:",
    "GRANTS": "gr:u:",
    "GRANT_ORDER": "go:u:",
    "GRANT_EXPIRY": "gx:u:",
    "GRANTS_DUE": "gdue",
    "CHARGE": "c:",
    "HOLD": "h:",
    "HOLDS": "holds",
    "DUE": "due",
    "CALLER_IDEMPOTENCY": "i:c:",
    "GENERATED_IDEMPOTENCY": "i:a:",
    "LEDGER": "ledger",
    "EVENTS": "events",
    "PRICE_NEXT": "pb:next",
    "PRICE_ACTIVE": "pb:active",
    "PRICE_BOOK": "pb:v:",
    "PRICE_META": "pb:m:",
    "PLANS": "plans",
    "PLANS_REV": "plans:rev",
    "USER_PLAN": "up:",
    "ALLOWANCE": "al:",
    "FEATURE_USE": "fu:",
    "TEAM": "tpool:",
    "TEAM_MEMBERS": "tmem:",
    "TEAM_HELD": "theld:",
    "TEAM_HOLDS": "tholds:",
    "TEAM_DAY": "tday:",
    "TEAM_MONTH": "tmon:",
    "POOL_HELD": "ph:u:",
    "MODEL_LIMITS": "ml:",
    "MODEL_DAY": "md:",
    "MODEL_MONTH": "mm:",
    "MODEL_HELD": "mr:",
    "CAP_MARK": "cx:",
    "ESCROW": "esc:",
    "FORWARD": "fw:",
    "LAYOUT": "layout",
    "MERGED": "rb:",
}


def lua_constants() -> dict[str, str]:
    """The key layout as Lua constants: ``K_<part>`` for each of
    :data:`KEY_PARTS`, ``S_USER``, ``S_PROJECT``, ``S_GLOBAL``: a scope's
    letter and its separator (``"u:"``), and ``SN_USER``... : a scope's name
    (as events name it)."""
    constants = {f"K_{name}": part for name, part in KEY_PARTS.items()}
    for scope, letter in SCOPE_LETTERS.items():
        constants[f"S_{scope.upper()}"] = letter + ":"
        constants[f"SN_{scope.upper()}"] = scope
    return constants


_K = KEY_PARTS


class Keys:
    """Key builders for one deployment."""

    __slots__ = (
        "base",
        "due",
        "events",
        "events_dead",
        "grants_due",
        "flushers",
        "holds",
        "ledger",
        "ledger_dead",
        "plans",
        "plans_rev",
    )

    def __init__(self, key_prefix: str, tag: str = "sg") -> None:
        self.base = f"{key_prefix}:{{{tag}}}:"
        #: pending leases scored by expiry (ms)
        self.holds = self.base + _K["HOLDS"]
        #: no pending lease expires before this time (ms): nothing to purge
        self.due = self.base + _K["DUE"]
        #: users scored by the next expiry of their grants (ms): the sweep's
        self.grants_due = self.base + _K["GRANTS_DUE"]
        #: the ledger stream, one entry per fact
        self.ledger = self.base + _K["LEDGER"]
        #: the events stream: what scripts emit besides facts
        self.events = self.base + _K["EVENTS"]
        #: where the dispatcher moves events no target took, with the error
        self.events_dead = self.events + ":dead"
        #: where the flusher moves entries Postgres refuses, with the error
        self.ledger_dead = self.ledger + ":dead"
        #: the consumer names of the flushers that keep a heartbeat
        self.flushers = self.ledger + ":flushers"
        #: the plans set with set_plan (hash: plan id -> JSON)
        self.plans = self.base + _K["PLANS"]
        #: bumped by every set_plan: instances reload the plans when it moves
        self.plans_rev = self.base + _K["PLANS_REV"]

    # -- shards: one deployment's keys are all here (spendgate.core.shards
    # spreads them over buckets of users, each a Keys of its own)

    def of(self, user_id: str) -> Keys:
        """The keys of ``user_id``'s bucket (:meth:`of_id`: of the bucket a
        lease or entry id was made in; :meth:`of_key`: a key is in): these."""
        return self

    def of_id(self, some_id: str) -> Keys:
        return self

    def of_key(self, key: str) -> Keys:
        return self

    def id_for(self, new_id: str, user_id: str) -> str:
        """A fresh lease or entry id for ``user_id`` (:meth:`id_like`: for
        the bucket another id was made in): ``new_id`` as it is."""
        return new_id

    def id_like(self, new_id: str, other_id: str) -> str:
        return new_id

    def id_in(self, some_id: str, bucket: Keys) -> str:
        """``some_id`` as made in ``bucket`` (one of :meth:`buckets`): as
        it is."""
        return some_id

    def buckets(self) -> tuple[Keys, ...]:
        """Every bucket's keys: these only."""
        return (self,)

    def stream_homes(self) -> tuple[Keys, ...]:
        """Every place whose ledger and events streams hold entries, for
        their readers: these only (sharded: the root's, and each bucket's)."""
        return (self,)

    def flusher(self, consumer: str) -> str:
        """One flusher's heartbeat: present while it is alive."""
        return self.ledger + ":flusher:" + consumer

    def dispatchers(self, group: str) -> str:
        """The consumer names of one group's event dispatchers that keep a
        heartbeat."""
        return self.events + ":dispatchers:" + group

    def dispatcher(self, consumer: str) -> str:
        """One event dispatcher's heartbeat: present while it is alive."""
        return self.events + ":dispatcher:" + consumer

    def limits(self, scope: str, scope_id: str) -> str:
        """The cap overrides of one user, project or the global scope (id
        ``""``): ``"<daily>|<monthly>[|<per_minute>[|<weekly>[|<action>]]]"``,
        a part empty for the default."""
        return f"{self.base}{_K['LIMITS']}{SCOPE_LETTERS[scope]}:{scope_id}"

    def model_limits(self, scope: str, scope_id: str, model: str) -> str:
        """The per-model caps of one user, project or the global scope (id
        ``""``): ``"<daily>|<monthly>"``, a part empty for none."""
        return f"{self.base}{_K['MODEL_LIMITS']}{model_part(scope, scope_id, model)}"

    def model_day(self, day: str, scope: str, scope_id: str, model: str) -> str:
        """Spent on ``model`` in one scope that day."""
        return f"{self.base}{_K['MODEL_DAY']}{day}:{model_part(scope, scope_id, model)}"

    def model_held(self, scope: str, scope_id: str, model: str) -> str:
        """Held by pending holds taken for ``model`` in one scope."""
        return f"{self.base}{_K['MODEL_HELD']}{model_part(scope, scope_id, model)}"

    def balance(self, user_id: str) -> str:
        """A user's prepaid balance (absent when none is kept)."""
        return self.base + _K["BALANCE"] + user_id

    def grants(self, user_id: str) -> str:
        """A user's live grants: member -> remaining (micro-units)."""
        return self.base + _K["GRANTS"] + user_id

    def grant_order(self, user_id: str) -> str:
        """A user's live grants in the order charges draw on them."""
        return self.base + _K["GRANT_ORDER"] + user_id

    def grant_expiry(self, user_id: str) -> str:
        """A user's expiring live grants, scored by expiry (ms)."""
        return self.base + _K["GRANT_EXPIRY"] + user_id

    def charge(self, entry_id: str) -> str:
        """What a refund of charge ``entry_id`` needs (kept the refund window)."""
        return self.base + _K["CHARGE"] + entry_id

    def held(self, scope: str, scope_id: str) -> str:
        """What pending holds keep of one scope (absent at zero)."""
        return f"{self.base}{_K['HELD']}{SCOPE_LETTERS[scope]}:{scope_id}"

    def hold(self, lease_id: str) -> str:
        return self.base + _K["HOLD"] + lease_id

    def forward(self, record_id: str) -> str:
        """Where a rebucketing moved the record of a charge or a finished
        hold (``record_id``: its entry or lease id)."""
        return self.base + _K["FORWARD"] + record_id

    def caller_idempotency(self, key: str) -> str:
        """The record of an idempotency key the caller gave."""
        return self.base + _K["CALLER_IDEMPOTENCY"] + key

    def generated_idempotency(self, entry_id: str) -> str:
        """The record of a fact the caller gave no key for (keyed by its entry id)."""
        return self.base + _K["GENERATED_IDEMPOTENCY"] + entry_id

    def day(self, day: str, scope: str, scope_id: str) -> str:
        return f"{self.base}{_K['DAY']}{day}:{SCOPE_LETTERS[scope]}:{scope_id}"

    @property
    def price_next(self) -> str:
        """The last price book version published."""
        return self.base + _K["PRICE_NEXT"]

    @property
    def price_active(self) -> str:
        """The active price book version."""
        return self.base + _K["PRICE_ACTIVE"]

    def price_book(self, version: int) -> str:
        """Price book version ``version`` (JSON, immutable)."""
        return f"{self.base}{_K['PRICE_BOOK']}{version}"

    def price_meta(self, version: int) -> str:
        """The label, time and digest of price book version ``version``."""
        return f"{self.base}{_K['PRICE_META']}{version}"

    def user_plan(self, user_id: str) -> str:
        """A user's plan: ``"<anchor_ms>|<plan id>"`` (absent: none)."""
        return self.base + _K["USER_PLAN"] + user_id

    def allowance(self, user_id: str, period_start_ms: int) -> str:
        """The allowance a user used in the cycle period starting then."""
        return f"{self.base}{_K['ALLOWANCE']}{period_start_ms}:{user_id}"

    def feature_use(self, user_id: str, period: str) -> str:
        """A user's feature calls in one calendar period (``m20250101``)."""
        return f"{self.base}{_K['FEATURE_USE']}{period}:{user_id}"

    def cap_mark(self, counter: str) -> str:
        """The threshold mark of a day or month counter (``d:...``, ``m:...``
        below the base): the highest threshold its events reached."""
        return self.base + _K["CAP_MARK"] + counter.removeprefix(self.base)

    def days(self, day: str) -> str:
        """What every day counter of ``day`` starts with (the scope follows)."""
        return f"{self.base}{_K['DAY']}{day}:"

    def month(self, month: str, scope: str, scope_id: str) -> str:
        return f"{self.base}{_K['MONTH']}{month}:{SCOPE_LETTERS[scope]}:{scope_id}"

    def week(self, monday: str, scope: str, scope_id: str) -> str:
        """Spent in the ISO week starting ``monday`` (``yyyymmdd``)."""
        return f"{self.base}{_K['WEEK']}{monday}:{SCOPE_LETTERS[scope]}:{scope_id}"

    def minute(self, scope: str, scope_id: str) -> str:
        """The sliding minute of one scope with a per-minute cap."""
        return f"{self.base}{_K['MINUTE']}{SCOPE_LETTERS[scope]}:{scope_id}"

    def team(self, team_id: str) -> str:
        """A team: its name, creation time, pool balance and held amount."""
        return self.base + _K["TEAM"] + team_id

    def team_members(self, team_id: str) -> str:
        """A team's members: user id -> role and caps."""
        return self.base + _K["TEAM_MEMBERS"] + team_id

    def team_keys(self, team_id: str, day: str, month: str) -> tuple[str, ...]:
        """Every key of a team a team script touches, in the order the
        scripts declare them after their first (``lua/_teams.lua``): the
        team, its members, their held amounts, its pending holds, and its
        members' spending in ``day`` and ``month``."""
        base = self.base
        return (
            base + _K["TEAM"] + team_id,
            base + _K["TEAM_MEMBERS"] + team_id,
            base + _K["TEAM_HELD"] + team_id,
            base + _K["TEAM_HOLDS"] + team_id,
            f"{base}{_K['TEAM_DAY']}{day}:{team_id}",
            f"{base}{_K['TEAM_MONTH']}{month}:{team_id}",
        )

    def pattern(self) -> str:
        """A SCAN pattern matching every key of the deployment (glob-escaped)."""
        return glob_escape(self.base) + "*"


def model_part(scope: str, scope_id: str, model: str) -> str:
    """What follows a per-model key's structural part (and window):
    ``<s>:<n>:<model>:<id>``, ``<n>`` the model id's length in UTF-8 bytes
    (as Lua's ``#`` counts it in ``lua/_models.lua``)."""
    return f"{SCOPE_LETTERS[scope]}:{len(model.encode())}:{model}:{scope_id}"


def glob_escape(text: str) -> str:
    """``text`` as a SCAN pattern that matches it literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
