"""Alert evaluation: a telemetry sink on the ingest path (threshold and band rules), edge fault events
(fault rules) and a periodic offline check (offline rules).

Telemetry and faults: the enabled rules are held in memory (reloaded every ``rules_refresh_s`` and at
once after a change through the API on this replica) and matched per device once. Each (rule, device)
pair goes idle -> pending (the condition holds, for less than ``for_s``) -> firing (an alert is open)
-> back to idle when the condition, with the rule's hysteresis, has been clear for ``clear_for_s``;
durations are measured on the samples' own timestamps. Only transitions touch PostgreSQL, off the hot
path, in order, through one queue; the firing pairs are read back from the open alerts at start, so an
alert raised before a restart is resolved after it. A pending pair is in memory only: a restart starts
its ``for_s`` again.

Offline: a periodic check (kit RetryLoop) over every device against the enabled offline rules, with
nothing in memory: the silence starts at the device's newest sample (presence's last-seen set in
Redis), or for a device that never sent anything at its registration (or the rule's last change, if
later). A device silent for ``offline_after_s`` gets an alert unless one was raised for this silence
already (so a manual resolve holds until the device speaks again); data again resolves it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import math
import operator
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from nattery_contracts.aio import raise_if_cancelling
from nattery_contracts.mqtt import EdgeEvent, Telemetry
from nattery_device.alerts import repository, service
from nattery_device.alerts.schemas import Operator, Rule, RuleKind
from nattery_device.devices.registry import DeviceEntry
from nattery_device.events.service import EdgeEventService
from nattery_device.stream.hub import StreamPublisher
from nattery_shared.outbox import OutboxRelay
from nattery_shared.retry import RetryLoop

log = logging.getLogger(__name__)

Sample = tuple[DeviceEntry, Telemetry]
Key = tuple[uuid.UUID, uuid.UUID]  # (rule, device)

IDLE, PENDING, FIRING = 0, 1, 2
OFFLINE_CHUNK = 500  # offline alerts raised or resolved per transaction
FAULT_CLEARED = "cleared"


@dataclass(slots=True)
class PairState:
    phase: int = IDLE
    since: float = 0.0  # pending: when the condition began; firing: when it cleared (0: not clear)
    codes: set[str] | None = None  # fault rules: the active codes matching the rule


_OPS = {
    Operator.GT: operator.gt,
    Operator.GE: operator.ge,
    Operator.LT: operator.lt,
    Operator.LE: operator.le,
}


@dataclass(slots=True)
class Check:
    """A threshold or band rule compiled for one device: the comparisons with their limits worked out
    (raising, and clearing past the hysteresis) and the pair's state, so the hot path does no hashing."""

    rule: Rule
    field: str
    pair: PairState
    op: Any  # threshold: operator.gt/ge/lt/le; band: None
    raise_at: float  # threshold: the limit; band: low
    clear_at: float  # threshold: the limit moved by the hysteresis; band: low + hysteresis
    high: float = math.inf  # band: high
    clear_high: float = math.inf  # band: high - hysteresis

    @classmethod
    def of(cls, rule: Rule, pair: PairState) -> Check:
        h = rule.hysteresis
        if rule.kind is RuleKind.THRESHOLD:
            assert rule.operator is not None and rule.value is not None and rule.field is not None
            falling = rule.operator in (Operator.GT, Operator.GE)
            clear_at = rule.value - h if falling else rule.value + h
            return cls(rule, rule.field, pair, _OPS[rule.operator], rule.value, clear_at)
        assert rule.low is not None and rule.high is not None and rule.field is not None
        return cls(rule, rule.field, pair, None, rule.low, rule.low + h, rule.high, rule.high - h)

    def breached(self, value: float, firing: bool) -> bool:
        if self.op is not None:
            return bool(self.op(value, self.clear_at if firing else self.raise_at))
        if firing:
            return value < self.clear_at or value > self.clear_high
        return value < self.raise_at or value > self.high


@dataclass(frozen=True, slots=True)
class Raise:
    rule: Rule
    entry: DeviceEntry
    message: str
    value: float | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Resolve:
    rule_id: uuid.UUID
    device_id: uuid.UUID
    at: datetime
    comment: str


def _matches(rule: Rule, entry: DeviceEntry) -> bool:
    return (
        rule.org_id == entry.org_id
        and (rule.site_id is None or rule.site_id == entry.site_id)
        and (rule.device_id is None or rule.device_id == entry.id)
        and (rule.device_kind is None or rule.device_kind == entry.kind)
    )


def _describe(rule: Rule, value: float) -> str:
    if rule.kind is RuleKind.THRESHOLD:
        symbol = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[str(rule.operator)]
        return f"{rule.name}: {rule.field} = {value:g} ({symbol} {rule.value:g})"
    return f"{rule.name}: {rule.field} = {value:g} (outside {rule.low:g}..{rule.high:g})"


class AlertEvaluator:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        redis: Redis,
        *,
        relay: OutboxRelay | None = None,
        rules_refresh_s: float = 10.0,
        offline_check_s: float = 2.0,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._relay = relay
        self._rules_refresh_s = rules_refresh_s
        self._offline_check_s = offline_check_s
        self._rules_by_org: dict[uuid.UUID, list[Rule]] = {}
        self._by_device: dict[uuid.UUID, tuple[list[Check], list[Rule]]] = {}  # (value rules, fault rules)
        self._state: dict[Key, PairState] = {}
        self._dirty = True
        self._queue: asyncio.Queue[Raise | Resolve] = asyncio.Queue()
        self._loaded = False
        self._signature: frozenset[tuple[uuid.UUID, datetime]] | None = None  # of the rules loaded

    # --- rules -------------------------------------------------------------------------------------
    def invalidate(self) -> None:
        """A rule changed: reload before the next evaluation."""
        self._dirty = True

    async def load_rules(self) -> None:
        self._dirty = False
        try:
            await service.seed_new_orgs(self._pool)
            async with self._pool.connection() as conn:
                rules = await repository.enabled_rules(
                    conn, [RuleKind.THRESHOLD.value, RuleKind.BAND.value, RuleKind.FAULT.value]
                )
                if not self._loaded:
                    for key in await repository.open_keys(conn):
                        self._state.setdefault(key, PairState(phase=FIRING))
                    self._loaded = True
        except BaseException:
            self._dirty = True
            raise
        signature = frozenset((r.id, r.updated_at) for r in rules)
        if signature == self._signature:
            return  # unchanged: keep the rules compiled per device
        by_org: dict[uuid.UUID, list[Rule]] = {}
        for rule in rules:
            by_org.setdefault(rule.org_id, []).append(rule)
        self._rules_by_org, self._by_device, self._signature = by_org, {}, signature

    def _rules_for(self, entry: DeviceEntry) -> tuple[list[Check], list[Rule]]:
        found = self._by_device.get(entry.id)
        if found is None:
            matching = [r for r in self._rules_by_org.get(entry.org_id, ()) if _matches(r, entry)]
            state = self._state
            checks = []
            for r in matching:
                if r.kind is not RuleKind.FAULT:
                    pair = state.get((r.id, entry.id))
                    if pair is None:
                        pair = state[(r.id, entry.id)] = PairState()
                    checks.append(Check.of(r, pair))
            found = self._by_device[entry.id] = (checks, [r for r in matching if r.kind is RuleKind.FAULT])
        return found

    async def _fresh(self) -> None:
        if self._dirty:
            try:
                await self.load_rules()
            except Exception as err:  # evaluate with the rules we have; the refresh loop retries
                raise_if_cancelling()
                log.warning("alert rules not reloaded: %r", err)

    # --- telemetry (the ingest path: in memory, transitions queued) ----------------------------
    async def record_telemetry(self, samples: Sequence[Sample], /) -> None:
        await self._fresh()
        by_device = self._by_device
        for entry, sample in samples:
            found = by_device.get(entry.id)
            checks = (found or self._rules_for(entry))[0]
            if not checks:
                continue
            values = sample.values
            ts = 0.0
            for check in checks:
                value = values.get(check.field)
                if value is None:
                    continue
                pair = check.pair
                rule = check.rule
                if not ts:
                    ts = sample.ts.timestamp()
                if pair.phase == FIRING:
                    if check.breached(value, True):
                        pair.since = 0.0
                    else:
                        if not pair.since:
                            pair.since = ts
                        if ts - pair.since >= rule.clear_for_s:
                            pair.phase, pair.since = IDLE, 0.0
                            self._queue.put_nowait(
                                Resolve(rule.id, entry.id, sample.ts, f"{rule.field} = {value:g}")
                            )
                elif check.breached(value, False):
                    if pair.phase == IDLE:
                        pair.phase, pair.since = PENDING, ts
                    if ts - pair.since >= rule.for_s:
                        pair.phase, pair.since = FIRING, 0.0
                        self._queue.put_nowait(Raise(rule, entry, _describe(rule, value), value, sample.ts))
                elif pair.phase == PENDING:
                    pair.phase, pair.since = IDLE, 0.0

    # --- faults (edge events) -----------------------------------------------------------------------
    async def record_event(self, entry: DeviceEntry, event: EdgeEvent) -> None:
        await self._fresh()
        rules = self._rules_for(entry)[1]
        if not rules:
            return
        cleared = event.details.get("state") == FAULT_CLEARED
        codes = [event.code]
        if event.code == "faults.active":  # the bridge's start-up summary
            codes = [str(c) for c in event.details.get("codes", [])]
        for rule in rules:
            pattern = rule.code or "*"
            matching = [c for c in codes if fnmatch.fnmatchcase(c, pattern)]
            if not matching:
                continue
            key = (rule.id, entry.id)
            pair = self._state.setdefault(key, PairState())
            if pair.codes is None:
                pair.codes = set()
            if cleared:
                pair.codes.difference_update(matching)
                if not pair.codes and pair.phase == FIRING:
                    pair.phase = IDLE
                    self._queue.put_nowait(
                        Resolve(rule.id, entry.id, event.ts, f"fault {event.code} cleared")
                    )
            else:
                pair.codes.update(matching)
                if pair.phase != FIRING:
                    pair.phase = FIRING
                    message = f"{rule.name}: {', '.join(sorted(matching))} ({event.message})"
                    self._queue.put_nowait(Raise(rule, entry, message, None, event.ts))

    # --- transitions to PostgreSQL, in order ---------------------------------------------------
    async def run_transitions(self) -> None:
        while True:
            raise_if_cancelling()
            item = await self._queue.get()
            try:
                await self._apply(item)
            except Exception as err:
                raise_if_cancelling()
                # Undo the transition in memory: the next sample evaluates it again (and retries it).
                if isinstance(item, Raise):
                    pair = self._state.get((item.rule.id, item.entry.id))
                    if pair is not None:
                        pair.phase, pair.since = IDLE, 0.0
                    log.warning("alert for %s not raised: %r", item.entry.id, err)
                else:
                    pair = self._state.get((item.rule_id, item.device_id))
                    if pair is not None:
                        pair.phase, pair.since = FIRING, 0.0
                    log.warning("alert for %s not resolved: %r", item.device_id, err)
                await asyncio.sleep(0.5)  # PostgreSQL trouble: do not spin
            finally:
                self._queue.task_done()

    async def _apply(self, item: Raise | Resolve) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            if isinstance(item, Raise):
                e = item.entry
                changed = (
                    await service.raise_alert(
                        conn,
                        item.rule,
                        org_id=e.org_id,
                        site_id=e.site_id,
                        device_id=e.id,
                        message=item.message,
                        value=item.value,
                        at=item.at,
                    )
                    is not None
                )
            else:
                changed = await service.resolve_cleared(
                    conn, item.rule_id, item.device_id, item.at, item.comment
                )
        if changed and self._relay is not None:
            self._relay.poke()

    async def drain(self) -> None:
        """Until every queued transition is stored (or given up on)."""
        await self._queue.join()

    # --- offline (periodic, state in PostgreSQL and Redis) ------------------------------------------
    async def check_offline(self) -> tuple[int, int]:
        """Raise and resolve offline alerts; returns (raised, resolved)."""
        if await service.seed_new_orgs(self._pool):
            self.invalidate()  # the new orgs' value and fault rules too
        async with self._pool.connection() as conn:
            rules = await repository.enabled_rules(conn, [RuleKind.OFFLINE.value])
            if not rules:
                return 0, 0
            devices = await repository.devices_for_offline(conn)
            newest = await repository.newest_alerts_of_rules(conn, [r.id for r in rules])
        seen = await repository.last_seen(self._redis)
        now = time.time()
        to_raise: list[tuple[Rule, dict[str, Any], str]] = []
        to_resolve: list[tuple[Rule, dict[str, Any]]] = []
        by_org: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for d in devices:
            by_org.setdefault(d["org_id"], []).append(d)
        for rule in rules:
            window = float(rule.offline_after_s or 0)
            for d in by_org.get(rule.org_id, ()):
                if (
                    (rule.site_id is not None and rule.site_id != d["site_id"])
                    or (rule.device_id is not None and rule.device_id != d["id"])
                    or (rule.device_kind is not None and rule.device_kind != d["kind"])
                ):
                    continue
                last = seen.get(d["id"])
                start = max(
                    last if last is not None else d["created_at"].timestamp(), rule.updated_at.timestamp()
                )
                silent = now - start >= window
                previous = newest.get((rule.id, d["id"]))
                is_open = previous is not None and previous[0] != "resolved"
                if silent and not is_open and (previous is None or previous[1].timestamp() < start):
                    message = (
                        f"{rule.name}: no data for {int(now - start)} s"
                        if last is not None
                        else f"{rule.name}: never sent data ({int(now - start)} s since registered)"
                    )
                    to_raise.append((rule, d, message))
                elif not silent and is_open:
                    to_resolve.append((rule, d))
        # Many at once (a site or a fleet going quiet): a few hundred per transaction; a failed chunk
        # is rolled back and found again by the next check.
        raised = resolved = 0
        for i in range(0, len(to_raise), OFFLINE_CHUNK):
            async with self._pool.connection() as conn, conn.transaction():
                at = datetime.now(UTC)
                for rule, d, message in to_raise[i : i + OFFLINE_CHUNK]:
                    raised += (
                        await service.raise_alert(
                            conn,
                            rule,
                            org_id=d["org_id"],
                            site_id=d["site_id"],
                            device_id=d["id"],
                            message=message,
                            value=None,
                            at=at,
                        )
                        is not None
                    )
        for i in range(0, len(to_resolve), OFFLINE_CHUNK):
            async with self._pool.connection() as conn, conn.transaction():
                at = datetime.now(UTC)
                for rule, d in to_resolve[i : i + OFFLINE_CHUNK]:
                    resolved += await service.resolve_cleared(conn, rule.id, d["id"], at, "data received")
        if (raised or resolved) and self._relay is not None:
            self._relay.poke()
        return raised, resolved

    async def run(self) -> None:
        """The rules refresh, the offline check and the transition writer, until cancelled."""

        async def refresh() -> None:
            await self.load_rules()

        async def offline() -> None:
            await self.check_offline()

        await asyncio.gather(
            RetryLoop(refresh, name="alert rules refresh", logger=log, every_s=self._rules_refresh_s).run(),
            RetryLoop(offline, name="offline alert check", logger=log, every_s=self._offline_check_s).run(),
            self.run_transitions(),
        )


class AlertingEdgeEvents(EdgeEventService):
    """Edge events stored as before (``events/``), then handed to the fault rules."""

    def __init__(self, pool: AsyncConnectionPool, stream: StreamPublisher, evaluator: AlertEvaluator) -> None:
        super().__init__(pool, stream)
        self._evaluator = evaluator

    async def record(self, entry: DeviceEntry, event: EdgeEvent) -> None:
        await super().record(entry, event)
        await self._evaluator.record_event(entry, event)
