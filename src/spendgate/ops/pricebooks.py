"""Price books: versioned, immutable pricing configurations kept in Redis.

``publish_pricing`` stores a new version (and by default makes it the active
one), ``activate_pricing`` switches to any published version (rolling back
is activating an older one), ``get_pricing`` and ``list_pricing`` read them.
Every instance sees an activation within :data:`REFRESH_SECONDS`: the active
version is read again at most that often for pricing (the LiteLLM callback;
for ``budget.pricing``, a task reads it that often from its first use until
the manager closes), and ``deduct`` checks it inside its own script, so a
charge is always priced by the version active when it is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from spendgate.core.protocol import Reply
from spendgate.core.windows import from_ms
from spendgate.errors import InvalidArgumentError, SpendgateError
from spendgate.errors.arguments import shown
from spendgate.models import PriceBookVersion
from spendgate.ops.base import Operations, text

if TYPE_CHECKING:
    from spendgate.pricing.catalog import Pricing
    from spendgate.pricing.engine import PricingEngine

#: how stale the active version may be where it is cached (seconds)
REFRESH_SECONDS = 1.0
#: versions read per round trip when listing
_PAGE = 500
#: the longest label, in characters
MAX_LABEL_LENGTH = 200


def canonical(config: Mapping[str, Any]) -> str:
    """The JSON a version is stored as (and its digest taken of)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


class PriceBooks(Operations):
    """``publish_pricing``, ``activate_pricing``, ``get_pricing``,
    ``list_pricing``; the active book, cached."""

    #: price book versions loaded, by version (immutable: kept)
    _books: dict[int, PricingEngine]
    #: the active version as last read, and when (monotonic seconds)
    _active: tuple[int | None, float] | None
    _pricing: Pricing | None
    #: the revision of the plans set with set_plan, as read with the active
    #: version (``None``: no plan was ever set)
    _plans_rev_seen: str | None = None
    #: the task keeping ``budget.pricing``'s book the active one
    _book_reader: asyncio.Task[None] | None = None

    async def publish_pricing(
        self,
        config: Mapping[str, Any] | PricingEngine,
        label: str | None = None,
        *,
        activate: bool = True,
    ) -> int:
        """Store ``config`` (bursar's format) as a new, immutable version.

        :param config: the price book, or a loaded :class:`PricingEngine`
        :param label: a note on the version (``"deploy-42"``)
        :param activate: make it the active version at once (``False``:
            publish now, :meth:`activate_pricing` later)
        :return: the new version number
        :raise PricingConfigError: the book does not load (nothing is stored)
        """
        from spendgate.pricing.engine import PricingEngine

        if isinstance(config, PricingEngine):
            engine = config
        else:
            engine = PricingEngine.from_dict(config)
        if label is not None and (
            not isinstance(label, str) or len(label) > MAX_LABEL_LENGTH
        ):
            raise InvalidArgumentError(
                f"label must be a str of at most {MAX_LABEL_LENGTH} characters"
            )
        if label is not None and not label.isascii():
            try:
                label.encode()  # (the flusher mirrors it into Postgres)
            except UnicodeEncodeError:
                raise InvalidArgumentError("label is not UTF-8 text") from None
        document = canonical(engine.config)
        meta = json.dumps(
            {
                "label": label,
                "created_ms": self._now_ms(),
                "digest": hashlib.sha256(document.encode()).hexdigest(),
            }
        )
        reply = await self._store.run(
            "pricing_publish",
            (self.keys.price_next,),
            (document, meta, "1" if activate else "0"),
        )
        version = int(reply[1])
        self._books[version] = engine
        if activate:
            await self._mirror_active(version)
            self._remember_active(version, engine)
        return version

    async def activate_pricing(self, version: int) -> None:
        """Make ``version`` the active price book, on every instance.

        :raise InvalidArgumentError: no such version was published
        """
        number = _version(version)
        reply = await self._store.run(
            "pricing_activate", (self.keys.price_active,), (number,)
        )
        if reply[0] == Reply.UNKNOWN_VERSION:
            raise InvalidArgumentError(f"no price book version {number}")
        await self._mirror_active(number)
        self._remember_active(number, await self._book(number))

    async def _mirror_active(self, version: int) -> None:
        """On a sharded deployment, copy the active version to every bucket
        (each deduct checks its bucket's copy: lua/pricing_mirror.lua), until
        the root's is the one copied (an activation racing this one copies
        its own too). A bucket that does not answer fails the activation,
        which, run again, copies it then; meanwhile that bucket's deducts
        are refused as priced with a stale book."""
        buckets = self.keys.buckets()
        if buckets[0] is self.keys:
            return
        while True:
            await asyncio.gather(
                *(
                    self._store.run("pricing_mirror", (k.price_active,), (version,))
                    for k in buckets
                )
            )
            reply = await self._store.run(
                "pricing_get", (self.keys.price_active,), ("",)
            )
            if reply[0] is None or int(reply[0]) == version:
                return
            version = int(reply[0])

    async def get_pricing(self, version: int | None = None) -> PriceBookVersion | None:
        """One version, with its book (by default the active one).

        :return: ``None`` when no version is active (and none was asked for)
        :raise InvalidArgumentError: no such version was published
        """
        number = "" if version is None else str(_version(version))
        reply = await self._store.run(
            "pricing_get", (self.keys.price_active,), (number,)
        )
        active, found, document, meta = reply[:4]
        if found is None or document is None:
            if version is None:
                return None
            raise InvalidArgumentError(f"no price book version {version}")
        return _version_of(int(found), meta, active, json.loads(document))

    async def list_pricing(self) -> list[PriceBookVersion]:
        """Every published version (oldest first), without their books."""
        versions: list[PriceBookVersion] = []
        first = 1
        while True:
            reply = await self._store.run(
                "pricing_list", (self.keys.price_next,), (first, _PAGE)
            )
            active, last, metas = reply[0], reply[1], reply[2:]
            for offset, meta in enumerate(metas):
                if meta is not None:
                    versions.append(_version_of(first + offset, meta, active))
            if last is None or first + _PAGE > int(last):
                return versions
            first += _PAGE

    def _fresh_active(self) -> tuple[int, PricingEngine] | None | Literal[False]:
        """The active book as cached, when read within :data:`REFRESH_SECONDS`
        (``None``: none active); ``False`` when it must be read again. No
        await: the common case costs a deduct no coroutine."""
        cached = self._active
        if cached is None or time.monotonic() - cached[1] >= REFRESH_SECONDS:
            return False
        version = cached[0]
        if version is None:
            return None
        engine = self._books.get(version)
        return False if engine is None else (version, engine)

    async def active_pricing(self) -> tuple[int, PricingEngine] | None:
        """The active version and its engine, read again at most every
        :data:`REFRESH_SECONDS`; ``None`` when no book is active."""
        fresh = self._fresh_active()
        if fresh is not False:
            return fresh
        reply = await self._store.run("pricing_get", (self.keys.price_active,), ("",))
        # (the plans' revision comes with it: plans reload when it moves)
        revision = reply[4] if len(reply) > 4 else None
        self._plans_rev_seen = None if revision is None else text(revision)
        if reply[0] is None:
            self._remember_active(None, None)
            return None
        version = int(reply[0])
        engine = self._books.get(version)
        if engine is None:
            engine = self._books[version] = _engine(reply[2])
        self._remember_active(version, engine)
        return version, engine

    def _follow_active(self) -> None:
        """Keep ``budget.pricing`` pricing by the active book, which another
        instance may activate: read it now, then every
        :data:`REFRESH_SECONDS` until the manager closes, in a task of the
        running loop (outside one, nothing: the book last read holds)."""
        reader = self._book_reader
        if reader is not None and not reader.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._book_reader = loop.create_task(self._read_active_books())

    async def _read_active_books(self) -> None:
        me = asyncio.current_task()
        while True:
            # (the store not answering: the book last read prices meanwhile)
            with contextlib.suppress(SpendgateError):
                await self.active_pricing()
            if self._book_reader is not me:
                return  # stopped, and the store's own timeout took the cancel
            await asyncio.sleep(REFRESH_SECONDS)

    async def _stop_following(self) -> None:
        reader, self._book_reader = self._book_reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            if reader.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    def _remember_active(
        self, version: int | None, engine: PricingEngine | None
    ) -> None:
        """The active version as just read or set, and the engine that
        ``budget.pricing`` prices by from now on."""
        self._active = (version, time.monotonic())
        if self._pricing is not None:
            self._pricing.book = engine

    async def _book(self, version: int) -> PricingEngine:
        engine = self._books.get(version)
        if engine is None:
            reply = await self._store.run(
                "pricing_get", (self.keys.price_active,), (str(version),)
            )
            if reply[2] is None:
                raise InvalidArgumentError(f"no price book version {version}")
            engine = self._books[version] = _engine(reply[2])
        return engine

    def _forget_active(self) -> None:
        """The active version changed under us: read it on the next call."""
        self._active = None


def _engine(document: bytes | str) -> PricingEngine:
    from spendgate.pricing.engine import PricingEngine

    return PricingEngine.from_dict(json.loads(document))


def _version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidArgumentError(
            f"a version is a whole number from 1, not {shown(version)}"
        )
    return version


def _version_of(
    version: int,
    meta: bytes | str,
    active: bytes | str | None,
    config: dict[str, Any] | None = None,
) -> PriceBookVersion:
    info = json.loads(meta)
    return PriceBookVersion(
        version=version,
        label=info.get("label"),
        created_at=from_ms(int(info["created_ms"])),
        digest=str(info["digest"]),
        active=active is not None and int(text(active)) == version,
        config=config,
    )
