#!/usr/bin/env python3
"""A deterministic simulation of DynamoDB under load, driving the REAL switch-path code (authorize_call,
complete_call, the escrow rebalancer) through an in-memory store adapter of its own, for two designs:

    current  escrow never refilled (the rebalancer never runs): every level is held on its own item,
             which is exactly today's behaviour of the code when no slot was ever filled
    escrow   the rebalancer ticks every second (services.rebalance), so calls hold upper levels from
             escrow slots on their client's item whenever a slot covers the hold

Usage: ``python bench/simulate.py [--quick] [--json] [--items-only] [--jobs N] [--seed S]``; the tests
import ``run(...)``. Standard library plus the project's own domain and service code, and its key layout
(adapters/dynamo/keys.py and models.py: HELD_SHARDS, CDR_SHARDS, WANT_SHARDS and the shard hashes, so a
change there changes the simulation; importing them needs pynamodb). Prints the table, the dry run and a
short "Findings" block computed from the runs. Exit status 1 on any overdraft, conservation failure or
error.

THE MODEL (what it does, and what it leaves out)

Time. Simulated seconds (float); the services' ``clock`` returns ``T0 + now``. A discrete-event scheduler
runs every concurrent operation (an authorization, a completion, a rebalancer tick) in a thread of its
own, but only ONE thread runs at a time: a store round trip suspends the calling thread until its reply
time and hands control straight to whichever operation is due next (ties by creation order). So reads
and conditional writes of many calls interleave in simulated time exactly as their latencies order them
(a read can be stale by the time its write lands: the race the guards exist for), and a run is a pure
function of its seed. Python compute time is not simulated (it counts as zero).

Round trips. A read (BatchGetItem of up to 100 keys, a Query page) or a single write costs 4 ms +- 1 ms
(uniform, seeded); a TransactWriteItems costs that plus the lock window W. An operation takes effect at
the instant it is sent; the caller continues when the reply arrives. Two reads whose answer cannot change
in this model are folded into the event times instead of suspending: authorize's lookup (identity route
and switch key; the call's task starts one round trip after its arrival, latency counted from the
arrival) and complete's find_call (part of the completion's delay; no sweeper, unique call ids).

DynamoDB behaviour modelled:
  (a) throughput: a token bucket of 1,000 WCU/s (burst depth 100 WCU) per partition key. Every item
      written is < 1 KB (the compact call record included): 1 WCU, 2 inside a transaction. A write that
      adds or removes a sparse-index entry costs 1 WCU on that index's partition key, outside the
      transaction's doubling, and only when the write takes effect (every index projects keys, or keys
      and a few short attributes): ``held`` (HELD#<crc32(call) % HELD_SHARDS>: entry added by the hold,
      removed by the completion), ``wants`` (WANT#<crc32(client) % WANT_SHARDS>: a refill request set,
      then cleared by the rebalancer) and the two CDR listings a completion adds the call record to
      (there is no CDR item: the record is the call's only CDR): ``client_calls`` (partition: the client)
      and ``tree_calls`` (partition: <root>#<crc32(call) % CDR_SHARDS>). Account items and call items
      are their own partition keys; the escrow registry spreads over ESC#<owner>#<crc32(client) % 16>,
      the owners' list is one partition, ESCOWNERS (written only when an owner is first listed).
      A write short of tokens on its base OR an index partition key is throttled (retryable; nothing
      written, nothing consumed). ``--items-only`` limits single items only (every registry entry its
      own key, indexes unlimited): the literal "1,000 WCU/s per item" model.
  (b) transactions lock their items for W (2, 5 or 10 ms) from the moment they are applied: a transaction
      or a single write touching an item locked by another transaction is cancelled with
      TransactionConflict (retryable). A transaction that reaches its condition checks locks its items
      whether it commits or is refused. Single writes lock nothing (a transaction conflicts with writes
      in flight, not with finished ones).
  (c) a failed condition cancels the whole transaction (nothing written, its WCU consumed) and the
      adapter raises Refused / DuplicateCall / AlreadySettled exactly where adapters/dynamo/writes.py
      does; the conditions are those of writes.change_update / slot_update and escrow_store.apply_moves.
  (d) retries follow writes.with_retries: up to 6 attempts, sleeping uniform(0, min(0.5, 0.02 * 2**k))
      simulated seconds after each cancellation's round trip; then StoreBusy (the switch gets a 503).
Not modelled: read capacity (reads never throttle; the JSON gives the hottest key's read units, counting
eventually consistent reads of account items at 0.5 RCU, against DynamoDB's 3,000 RCU/s per partition;
tariffs are taken as cached by the warm-Lambda cache), index replication lag (the wants index reads as
of now), Lambda cold starts and concurrency limits, the sweeper, adaptive-capacity splits (split for
heat could spread ESCOWNERS over its sort keys; ESC#, HELD#, tree_calls and WANT# partitions
are sharded instead), any cost of a cancelled transaction beyond its WCU. The rebalancer runs for real
(every TICK, the idle pass every IDLE_EVERY), but at 5,000/s and above a run is shorter than one tick,
so its writes are not in those windows: the Findings estimate them from the pre-history (see there).

Workload. One top reseller under the admin root, 1,000 sub-resellers, 200,000 clients (200 per sub),
prices root cost 0.01/min, top buys 0.02, sub 0.03, client 0.05, 60/60 s increments, tree max_duration
600 s: holds per call client 0.50, sub 0.30, top 0.20. Resellers have no per-call limits (escrowable);
everyone is funded amply. Calls arrive as a Poisson process at the offered rate from clients drawn
uniformly (seeded); only the clients that call are created. A run offers min(2 s x rate, 1,500) calls
(500 with --quick: the cap keeps the whole table within the time budget). Every granted call is answered
(billsec uniform 30-120 s, cut at the granted max_duration as the switch does) and its completion
arrives 10-50 ms of simulated time after the grant: compressed, so that completions, which write the
same items as holds, run at their steady-state rate inside a short run (it only shrinks the money in
flight). A completion answered 503 is counted and left held (its re-send would come after the run).

Measured window: from the longest completion delay (50 ms) to the last arrival, so the first part only
warms up. granted/s = hold transactions committed per second in the window (what the items sustain
under the full load; counting the grants of the window's arrivals instead would credit retries that
succeed after the burst ended); 503/s = the window's arrivals answered 503, per second; p50/p99 =
latency of the window's arrivals; WCU/s = units consumed per second in the window (a saturated key
shows ~1,000, plus up to its 100 WCU burst spread over a window that is only 0.1 s long at 10,000/s).

Steady state at t=0 (escrow design). Slots are not empty at the start of a measured second: each calling
client's two slots (its sub's at distance 1, the top's at distance 2) start as the rules leave them after
1,200 s of the same Poisson traffic (per-client rate = offered / 200,000), every caller and owner in one
time-ordered pre-history, begun from the stationary mix of a slot's cycle under last-use aging (warm
with probability 1 - exp(-rate x (IDLE_AFTER + IDLE_EVERY/2))). A call holds from the slot when it covers
the hold (stamping the slot's last use, e<k>u), else on the owner's item, and asks for a refill when the
slot is short or left below one hold. The rebalancer ticks at the run's own tick phase, once a second:
its decisions are the real ``escrow.plan_owner`` (refill to REFILL_HOLDS holds, only from plenty: the
owner keeps at least RESERVE x what it gives; a dry owner refills nothing and recalls its other slots)
and, on the idle pass (the first tick after every IDLE_EVERY s, the last one 30 s before t=0), the real
rule of services.rebalance: a slot whose registry entry is older than IDLE_AFTER is re-dated to its last
use when a call used it since, else ``escrow.plan_idle`` recalls and sweeps it. Only the bookkeeping
around them is re-implemented (calls complete at once, no contention: the run measures that); a refill
requested after the last tick stays a pending request on the item. The owners' items carry the matching
held and unswept spent money (their wallets start at their funding). Slots of clients that do not call in
the run are not modelled (the idle escrow reported is the callers' only). In the current design every
client item already carries the refill requests today's code writes.

Findings. Computed from the runs: the hottest key per design at 5,000 and 10,000/s, the busiest
partition of each index, and the dry run. Plus the rebalancer's steady-state load on the top reseller's
registry (ESC#top#<shard>: 2 WCU per slot a refill fills from empty, inside the refill transactions; 1 WCU
per last-use re-dating, in BatchWriteItem bursts on each idle pass): the pre-history's counts over its
second half, scaled by clients / callers. These are estimates
(no contention, the callers only), because the measured windows at those rates are shorter than a tick.

Checks:
  overdraft event  after every write, an account item whose ``available`` is below its floor (0: all
                   accounts are prepaid) or a slot whose available is below 0;
  conservation     for every account, at the end: item balance - unswept slot spent == initial wallet -
                   sum of the charges of its level in completed calls; held == holds in flight on its
                   own item + sum over its slots (available + holds in flight from the slot + spent);
                   available == balance - held; active_calls == calls in flight held on its own item;
                   no available below its floor.
  false denial     an ``insufficient_funds`` denial at a level whose own available plus all its slots'
                   available could have paid the smallest grant (one 60 s increment at its rate).

The dry run: escrow design, 5,000 calls/s, W = 5 ms, the top reseller holding exactly N = calls/2 holds
(0.20 each) and no escrow on clients' items: it ran dry at the last tick, its escrow was recalled and
what its item had left was spread over its POOLS pool items (escrow.plan_pools, as the rebalancer's
_fill_pools does; every call under it reads the one pool its client maps to and holds from it when its
own slot cannot), twice as many calls offered as it can pay for. Calls last 30-120 s (real
time, not compressed), so no money comes back during the burst: exactly N calls are payable (a pool's
remainder below one hold pays a shorter call, so slightly more may be granted). Reported: the share of
those N that were granted (the issue asks >= 95%). Its false denials are calls whose pool was empty while
other pools still held money (the price of sharding: that money goes to those pools' later callers, and
the next tick levels the pools again from the owner's item).
"""
from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import os
import random
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import replace
from decimal import Decimal
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from chalicelib.adapters.dynamo.keys import ESCROW_REGISTRY_SHARDS, cdr_tree, escrow_key, hash_shard, want_key  # noqa: E402
from chalicelib.adapters.dynamo.models import CDR_SHARDS, HELD_SHARDS, WANT_SHARDS  # noqa: E402
from chalicelib.domain import ledger  # noqa: E402
from chalicelib.domain.accounts import ADMIN, CLIENT, RESELLER, Account, TreeSettings  # noqa: E402
from chalicelib.domain.authorization import INSUFFICIENT_FUNDS  # noqa: E402
from chalicelib.domain.escrow import (IDLE_AFTER, POOL, POOL_AFTER, POOL_PASSES, POOLS, REFILL_HOLDS, Slot,  # noqa: E402
                                      plan_idle, plan_owner,
                                      plan_pools, pool_id, pool_of)
from chalicelib.domain.money import ZERO  # noqa: E402
from chalicelib.domain.rating import call_cost  # noqa: E402
from chalicelib.domain.tariffs import Rate, Tariff  # noqa: E402
from chalicelib.services.authorize_call import AuthorizeRequest, Authorized, authorize_call  # noqa: E402
from chalicelib.services.complete_call import complete_call  # noqa: E402
from chalicelib.services.ports import AlreadySettled, DuplicateCall, Refused, StoreBusy  # noqa: E402
from chalicelib.services.rebalance import IDLE_EVERY, MOVES_PER_TRANSACTION, REGISTRY_KEEP, rebalance  # noqa: E402
from chalicelib.services.records import DONE, EXPIRED, HELD, KeyCheck, Lookup, Route, Snapshot  # noqa: E402

# --- constants -----------------------------------------------------------------------------------

T0 = 1_780_000_000           # the epoch second simulated time 0 stands for
NUMBER = "15551230001"
KEY_HASH, SWITCH_ID = "sim-key-hash", "sim-switch"
MAX_DURATION = 600
CLIENTS, SUBS = 200_000, 1_000
PRICES = {"admin": Decimal("0.01"), "top": Decimal("0.02"), "sub": Decimal("0.03"), "client": Decimal("0.05")}
TARIFF_OF = {"admin": "cost", "top": "wholesale", "sub": "resale", "client": "retail"}
TOP_FUNDS = Decimal("10000000")
SUB_FUNDS = Decimal("1000000")
CLIENT_FUNDS = Decimal("1000")

WCU_PER_S, BURST_WCU = 1000.0, 100.0
RTT = (0.003, 0.005)                       # seconds, uniform
ATTEMPTS, BACKOFF_BASE, BACKOFF_CAP = 6, 0.02, 0.5     # writes.with_retries
# keys per BatchGetItem / BatchWriteItem, registry rows per 1 MB Query page
BATCH_GET, BATCH_WRITE, QUERY_PAGE = 100, 25, 16_000
COMPLETION_DELAY = (0.01, 0.05)            # compressed: see the docstring
REAL_DURATION = (30.0, 120.0)              # the dry run's calls
TICK = 1.0
WARMUP = 1200.0
CAP, QUICK_CAP = 1500, 500
RATES = (50, 500, 5000, 10000)
WINDOWS_MS = (2, 5, 10)


def rate_of(level: str) -> Rate:
    return Rate("1", PRICES[level], name="US")


RATES_BY_LEVEL = {lvl: rate_of(lvl) for lvl in PRICES}
TARIFFS = {TARIFF_OF[lvl]: Tariff(TARIFF_OF[lvl], owner="admin" if lvl in ("admin", "top") else "top")
           for lvl in PRICES}
BOOKS = {TARIFF_OF[lvl]: {"1": [RATES_BY_LEVEL[lvl]]} for lvl in PRICES}
HOLD = {lvl: call_cost(RATES_BY_LEVEL[lvl], MAX_DURATION) for lvl in PRICES}
MIN_GRANT = {lvl: call_cost(RATES_BY_LEVEL[lvl], 1) for lvl in PRICES}
SETTINGS = TreeSettings(max_duration=MAX_DURATION)


def level_of(account_id: str) -> str:
    if account_id in ("admin", "top"):
        return account_id
    return "sub" if account_id.startswith("s") else "client"


def client_id(i: int) -> str:
    return f"c{i:06d}"


def sub_of(i: int, subs: int) -> str:
    return f"s{i % subs:04d}"


def want_shard(client: str) -> int:
    return int(want_key(client).split("#")[1])          # WANT#<crc32 % WANT_SHARDS>


def held_shard(call_id: str) -> int:
    return hash_shard(call_id)                          # HELD#<crc32 % HELD_SHARDS>


def tree_shard(root: str, call_id: str) -> str:
    return cdr_tree(root, call_id)                      # <root>#<crc32 % CDR_SHARDS>


def registry_partition(owner: str, client: str) -> tuple:
    return ("ESC", escrow_key(owner, client)[0][len("ESC#"):])   # ESC#<owner>#<crc32 % ESCROW_REGISTRY_SHARDS>


class Conflict(Exception):
    """TransactionConflict: retryable."""


class Throttled(Exception):
    """Throttling / ProvisionedThroughputExceeded: retryable."""


class ConditionFailed(Exception):
    pass


# --- the scheduler: one runnable thread at a time, in simulated-time order ---------------------------

_IDLE: List["_Worker"] = []     # idle worker threads, kept across runs (creating one costs ~0.3 ms)


class _Worker(threading.Thread):
    def __init__(self, sched: "Scheduler"):
        super().__init__(daemon=True)
        self.sched, self.fn, self.stop = sched, None, False
        self.wake = threading.Lock()
        self.wake.acquire()
        self.start()

    def run(self):
        while True:
            self.wake.acquire()
            if self.stop:
                return
            self.sched._work(self)


class Scheduler:
    """Exactly one thread runs at a time. A thread that suspends (``sleep``) or finishes a task hands
    control straight to the thread of the next event (a finished thread runs the next new task itself)."""

    def __init__(self):
        self.now = 0.0
        self.heap: list = []
        self.seq = 0
        self.done = threading.Lock()
        self.done.acquire()
        self.idle = _IDLE
        self.current: Optional[_Worker] = None
        self.errors: List[str] = []

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.heap, (t, self.seq, fn, None))
        self.seq += 1

    def _worker(self) -> _Worker:
        if self.idle:
            w = self.idle.pop()
            w.sched = self
            return w
        old = threading.stack_size(1 << 20)
        try:
            return _Worker(self)
        finally:
            threading.stack_size(old)

    def _work(self, w: _Worker) -> None:
        """Run w's task, then whatever new tasks come next; return once control went to another thread."""
        while True:
            fn, w.fn = w.fn, None
            try:
                fn()
            except BaseException:      # noqa: BLE001 - a bug in a task: recorded, the run fails
                self.errors.append(traceback.format_exc())
            if not self.heap:
                self.idle.append(w)
                self.done.release()
                return
            t, _, fn, target = heapq.heappop(self.heap)
            self.now = t
            if target is None:
                w.fn = fn
                continue
            self.idle.append(w)
            self.current = target
            target.wake.release()
            return

    def sleep(self, dt: float) -> None:
        """Called from a task: resume it ``dt`` simulated seconds later, after everything due before."""
        t = self.now + dt
        if not self.heap or self.heap[0][0] > t:
            self.now = t                        # nothing else happens meanwhile: no switch needed
            return
        me = self.current
        heapq.heappush(self.heap, (t, self.seq, None, me))
        self.seq += 1
        t2, _, fn, target = heapq.heappop(self.heap)
        self.now = t2
        if target is None:
            target = self._worker()
            target.fn = fn
        self.current = target
        target.wake.release()
        me.wake.acquire()

    def run(self) -> None:
        if not self.heap:
            return
        t, _, fn, _ = heapq.heappop(self.heap)
        self.now = t
        w = self._worker()
        w.fn = fn
        self.current = w
        w.wake.release()
        self.done.acquire()      # the idle threads stay in _IDLE for the next run


# --- the simulated table ---------------------------------------------------------------------------

class Action:
    """One item of a transaction: its lock key, its partition key, what a refusal is called, the
    condition, the writes, and the sparse-index entries it adds or removes (evaluated before applying)."""
    __slots__ = ("item", "pk", "label", "cond", "apply", "gsi")

    def __init__(self, item, pk, label, cond=None, apply=None, gsi=None):
        self.item, self.pk, self.label, self.cond, self.apply, self.gsi = item, pk, label, cond, apply, gsi


def _key_name(pk) -> str:
    kind = pk[0]
    if kind == "ACC":
        return f"ACC#{pk[1]}"
    if kind == "CC":
        return f"client_calls:{pk[1]}"
    if kind == "CT":
        return f"tree_calls:{pk[1]}"
    if kind in ("HELD", "WANT"):
        return f"{kind}#{pk[1]}"
    if kind == "ESC":
        return f"ESC#{pk[1]}" if len(pk) == 2 else f"ESC#{pk[1]}/{pk[2]}"
    if kind == "OWN":
        return "ESCOWNERS" if len(pk) == 1 else f"ESCOWNERS/{pk[1]}"
    return "#".join(str(p) for p in pk)


class Db:
    """Items in dicts; per-key token buckets; per-item transaction locks; the overdraft watch."""

    def __init__(self, sim: "Sim", window: float, partitions: bool):
        self.sim, self.window, self.partitions = sim, window, partitions
        self.items: Dict[str, dict] = {}
        self.calls: Dict[str, object] = {}          # call id -> CallRecord as stored
        self.routes: Dict[str, Route] = {}
        self.registry: Dict[str, Dict[str, Tuple[int, int]]] = defaultdict(dict)
        self.owners: Dict[str, int] = {}            # ESCOWNERS: owner -> pending recall (0: none)
        self.wanting: Dict[int, set] = defaultdict(set)
        self.escrow_avail: Dict[str, Decimal] = defaultdict(lambda: ZERO)
        self.locks: Dict[tuple, float] = {}
        self.buckets: Dict[tuple, list] = {}
        self.wcu: Counter = Counter()               # partition key -> WCU consumed in the arrival span
        self.item_wcu: Counter = Counter()          # item -> WCU consumed in the arrival span
        self.rcu: Counter = Counter()
        self.throttled_by: Counter = Counter()
        self.conflicts = self.throttles = 0         # in the arrival span
        self.conflicts_all = self.throttles_all = 0
        self.overdrafts: List[str] = []

    # --- items ------------------------------------------------------------------------------------
    def add_account(self, account_id: str, role: str, parent: Optional[str], balance: Decimal) -> dict:
        path = account_id if parent is None else f"{self.items[parent]['path']}/{account_id}"
        item = {"id": account_id, "role": role, "parent_id": parent, "tariff_id": TARIFF_OF[level_of(account_id)],
                "path": path,
                "status": "active", "billing_type": "prepaid", "balance": balance, "credit_limit": ZERO,
                "held": ZERO, "available": balance, "active_calls": 0, "max_calls": None, "slots": {},
                "want": None, "_acc": None}
        self.items[account_id] = item
        return item

    def account(self, account_id: str) -> Optional[Account]:
        item = self.items.get(account_id)
        if item is None:
            return None
        acc = item["_acc"]
        if acc is None:
            slots = tuple(Slot(distance=k, owner=s.get("o"), available=s.get("a") or ZERO, spent=s.get("s") or ZERO,
                               need=s.get("n") or ZERO, wanted_by=s.get("w"), used_at=s.get("u") or 0)
                          for k, s in sorted(item["slots"].items()) if s.get("o") is not None or s.get("w") is not None)
            acc = Account(id=item["id"], role=item["role"], parent_id=item["parent_id"], tariff_id=item["tariff_id"],
                          status=item["status"], billing_type=item["billing_type"], balance=item["balance"],
                          credit_limit=item["credit_limit"], held=item["held"], active_calls=item["active_calls"],
                          max_calls=item["max_calls"], settings=SETTINGS if item["parent_id"] is None else None,
                          escrow=slots, path=item["path"])
            item["_acc"] = acc
        return acc

    def touched(self, item: dict, slot_distances: Sequence[int] = ()) -> None:
        """After a write: invalidate the cached Account and watch for an overdraft."""
        item["_acc"] = None
        floor = None if item["billing_type"] == "prepaid_soft" else (
            -item["credit_limit"] if item["billing_type"] == "postpaid" else ZERO)
        if floor is not None and item["available"] < floor:
            self.overdrafts.append(f"t={self.sim.sched.now:.4f} {item['id']} available {item['available']}")
        for k in slot_distances:
            a = item["slots"].get(k, {}).get("a")
            if a is not None and a < 0:
                self.overdrafts.append(f"t={self.sim.sched.now:.4f} {item['id']} slot {k} available {a}")

    def set_want(self, item: dict, on: bool) -> None:
        shard = want_shard(item["id"])
        if on:
            item["want"] = f"WANT#{shard}"
            self.wanting[shard].add(item["id"])
        else:
            item["want"] = None
            self.wanting[shard].discard(item["id"])

    def slot_add(self, item: dict, k: int, field_: str, delta: Decimal) -> None:
        slot = item["slots"].setdefault(k, {})
        slot[field_] = (slot.get(field_) or ZERO) + delta
        if field_ == "a" and slot.get("o") is not None:
            self.escrow_avail[slot["o"]] += delta

    def slot_claim(self, item: dict, k: int, owner: str) -> None:
        slot = item["slots"].setdefault(k, {})
        if slot.get("o") != owner:
            if slot.get("o") is not None and slot.get("a"):
                self.escrow_avail[slot["o"]] -= slot["a"]
            slot["o"] = owner
            if slot.get("a"):
                self.escrow_avail[owner] += slot["a"]

    # --- capacity ---------------------------------------------------------------------------------
    def _pk(self, action: Action):
        return action.pk if self.partitions else action.item

    def _tokens(self, pk, now: float) -> list:
        b = self.buckets.get(pk)
        if b is None:
            b = self.buckets[pk] = [BURST_WCU, now]
        elif b[1] != now:
            b[0] = min(BURST_WCU, b[0] + (now - b[1]) * WCU_PER_S)
            b[1] = now
        return b

    def _admit(self, charges: Dict[tuple, float], items: Sequence[tuple], now: float, lock: bool,
               index: Dict[tuple, float] = None) -> None:
        """Throttled when a base or index partition key is short of units (a GSI that cannot take its
        write throttles the base write); then conflicts; then the base units are consumed (the index
        units only if the write takes effect: ``consume``)."""
        in_span = self.sim.measured(now)
        both = dict(charges)
        for pk, w in (index or {}).items():
            both[pk] = both.get(pk, 0) + w
        short = [pk for pk, w in both.items() if self._tokens(pk, now)[0] < w]
        if short:
            self.throttles_all += 1
            if in_span:
                self.throttles += 1
                for pk in short:
                    self.throttled_by[_key_name(pk)] += 1
            raise Throttled(_key_name(short[0]))
        for it in items:
            if self.locks.get(it, -1.0) > now:
                self.conflicts_all += 1
                if in_span:
                    self.conflicts += 1
                raise Conflict(_key_name(it))
        for pk, w in charges.items():
            self.buckets[pk][0] -= w
            if in_span:
                self.wcu[pk] += w
        if lock:
            until = now + self.window
            for it in items:
                self.locks[it] = until

    def _charges(self, actions: Sequence[Action], per_action: float) -> Tuple[Dict[tuple, float], Dict[tuple, float]]:
        """(base units by partition key, index units by index partition key: 1 per entry added or
        removed, outside a transaction's doubling; none in the --items-only model)."""
        charges: Dict[tuple, float] = {}
        index: Dict[tuple, float] = {}
        for a in actions:
            pk = self._pk(a)
            charges[pk] = charges.get(pk, 0) + per_action
            if self.partitions and a.gsi is not None:
                for gpk in a.gsi():
                    index[gpk] = index.get(gpk, 0) + 1
        return charges, index

    def consume(self, index: Dict[tuple, float], now: float) -> None:
        in_span = self.sim.measured(now)
        for pk, w in index.items():
            self._tokens(pk, now)[0] -= w
            if in_span:
                self.wcu[pk] += w

    def transact(self, actions: Sequence[Action]) -> List:
        """One TransactWriteItems at the current simulated time. Returns the labels refused (then nothing
        was written, no index either); raises Throttled or Conflict (retryable)."""
        now = self.sim.sched.now
        charges, index = self._charges(actions, 2)
        self._admit(charges, [a.item for a in actions], now, lock=True, index=index)
        if self.sim.measured(now):
            for a in actions:
                self.item_wcu[a.item] += 2
        refused = [a.label for a in actions if a.cond is not None and not a.cond()]
        if refused:
            return refused
        for a in actions:
            a.apply()
        self.consume(index, now)
        return []

    def write(self, action: Action) -> None:
        """One UpdateItem/PutItem/DeleteItem: conflicts with a transaction in flight, locks nothing."""
        self.batch([action])

    def batch(self, actions: Sequence[Action]) -> None:
        """Single writes sent together (one UpdateItem, or one BatchWriteItem of <= 25): 1 WCU each; all
        of them retried when one is throttled (no partial UnprocessedItems in this model)."""
        now = self.sim.sched.now
        charges, index = self._charges(actions, 1)
        self._admit(charges, [a.item for a in actions], now, lock=False, index=index)
        if self.sim.measured(now):
            for a in actions:
                self.item_wcu[a.item] += 1
        for a in actions:
            if a.cond is not None and not a.cond():
                raise ConditionFailed(a.label)
        for a in actions:
            a.apply()
        self.consume(index, now)

    def read(self, pk, units: float) -> None:
        if self.sim.measured(self.sim.sched.now):
            self.rcu[pk] += units


# --- the store adapter ----------------------------------------------------------------------------

class SimStore:
    """services.ports.SwitchStore and services.rebalance.EscrowStore over ``Db``, with the conditions of
    adapters/dynamo/writes.py (change_update, slot_update) and escrow_store.py (apply_moves)."""

    def __init__(self, sim: "Sim"):
        self.sim, self.db = sim, sim.db
        self.touched = 0

    # --- round trips and retries ------------------------------------------------------------------
    def _trip(self) -> None:
        self.sim.sched.sleep(self.sim.rng.uniform(*RTT))

    def _retrying(self, once: Callable[[], object], latency: Callable[[], float], what: str):
        for attempt in range(ATTEMPTS):
            try:
                result = once()
            except (Conflict, Throttled):
                if attempt == ATTEMPTS - 1:
                    self.sim.sched.sleep(latency())
                    raise StoreBusy(what)
                # the cancellation's round trip, then the back-off (one suspension: nothing between)
                self.sim.sched.sleep(latency() + self.sim.rng.uniform(
                    0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt)))
                continue
            except ConditionFailed:
                self.sim.sched.sleep(latency())
                raise
            self.sim.sched.sleep(latency())
            return result
        raise StoreBusy(what)

    def _commit(self, actions: List[Action], what: str) -> List:
        return self._retrying(lambda: self.db.transact(actions),
                              lambda: self.sim.rng.uniform(*RTT) + self.db.window, what)

    def _write(self, action: Action, what: str) -> None:
        self._retrying(lambda: self.db.write(action), lambda: self.sim.rng.uniform(*RTT), what)

    # --- conditions and writes of one account item (writes.change_update / slot_update) -----------
    def guard_available(self, item: dict, change: ledger.BalanceChange) -> bool:
        """``available >= min_available`` (a subclass may break it, to prove the checks can fail)."""
        return change.min_available is None or item["available"] >= change.min_available

    def _slot_ok(self, item: dict, sc) -> bool:
        slot = item["slots"].get(sc.distance, {})
        owner = slot.get("o")
        if sc.claim:
            if not (owner is None or owner == sc.owner):
                return False
        elif sc.min_available is not None or sc.min_spent is not None:
            if owner != sc.owner:
                return False
        if sc.min_available is not None:
            a = slot.get("a")
            if a is None or a < sc.min_available:
                return False
        if sc.min_spent is not None:
            s = slot.get("s")
            if s is None or s < sc.min_spent:
                return False
        return True

    def _slot_apply(self, item: dict, sc) -> None:
        if sc.claim:
            self.db.slot_claim(item, sc.distance, sc.owner)
        if sc.available:
            self.db.slot_add(item, sc.distance, "a", sc.available)
        if sc.spent:
            self.db.slot_add(item, sc.distance, "s", sc.spent)
        if sc.want is not None:
            slot = item["slots"].setdefault(sc.distance, {})
            slot["w"], slot["n"] = sc.owner, sc.want
        if sc.used_at is not None:                      # e<k>u: a hold from the slot stamps its last use
            item["slots"].setdefault(sc.distance, {})["u"] = sc.used_at

    def change_action(self, change: ledger.BalanceChange, must_exist: bool = False) -> Action:
        db, account_id = self.db, change.account_id
        wants = any(sc.want is not None for sc in change.slots)
        assert not change.counters, "the simulated tree has no CPS or spend limits (domain.counters)"

        def cond() -> bool:
            item = db.items.get(account_id)
            if item is None:
                return False          # every item the switch path writes exists in this model
            for sc in change.slots:
                if not self._slot_ok(item, sc):
                    return False
            if change.active_only and item["status"] != "active":
                return False
            if not self.guard_available(item, change):
                return False
            if change.below_max_calls and (item["max_calls"] is None or not item["active_calls"] < item["max_calls"]):
                return False
            if change.credit_was is not None and item["credit_limit"] != change.credit_was:
                return False
            return True

        def apply() -> None:
            item = db.items[account_id]
            item["balance"] += change.balance
            item["held"] += change.held
            item["credit_limit"] += change.credit_limit
            item["available"] += change.available
            item["active_calls"] += change.active_calls
            for sc in change.slots:
                self._slot_apply(item, sc)
            if wants:
                db.set_want(item, True)
            db.touched(item, [sc.distance for sc in change.slots])

        def gsi():
            item = db.items.get(account_id)
            if wants and item is not None and item["want"] is None:
                return [("WANT", want_shard(account_id))]
            return []

        key = ("ACC", account_id)
        return Action(key, key, (change.what, account_id), cond, apply, gsi)

    # --- Directory ----------------------------------------------------------------------------------
    def lookup(self, account_ref: str, key_hash: str) -> Lookup:
        # Its round trip is paid before the call's task starts (Sim.setup schedules the task one round
        # trip after the arrival): what it reads (the identity's route, the switch key) never changes here.
        route = self.db.routes.get(account_ref)
        return Lookup(key=KeyCheck(True, SWITCH_ID), route=route, identity=account_ref)

    def resolve_route(self, client_id_: str) -> Optional[Route]:
        chain, next_id = [], client_id_
        while next_id is not None:
            account = self.db.account(next_id)
            self._trip()
            if account is None:
                return None
            chain.append(account)
            next_id = account.parent_id
        return Route.of_chain(chain)

    def load(self, route: Route, number: str, call_id: str, now: int) -> Snapshot:
        accounts = {}
        for hop in route.hops:
            account = self.db.account(hop.account_id)
            if account is not None:
                accounts[hop.account_id] = account
                self.db.read(("ACC", hop.account_id), 0.5)
        if len(route.hops) >= 3:      # reads.load: the top reseller's pool for this client
            pid = pool_id(route.hops[-2].account_id, pool_of(route.client_id))
            pool = self.db.account(pid)
            self.db.read(("ACC", pid), 0.5)
            if pool is not None:
                accounts[pid] = pool
        call = self._call_copy(call_id)
        self._trip()
        return Snapshot(accounts=accounts, tariffs=TARIFFS, books=BOOKS, usage={}, call=call)

    def _call_copy(self, call_id: str):
        return self.db.calls.get(call_id)     # stored records are replaced, never changed in place

    def find_call(self, call_id: str, key_hash: Optional[str]):
        # Its round trip is part of the completion's delay: nothing but that completion changes a call
        # here (no sweeper, unique call ids), so reading it one round trip earlier reads the same.
        call = self._call_copy(call_id)
        return call, KeyCheck(True, SWITCH_ID)

    def expired_calls(self, now: int):
        return []

    def accounts(self, account_ids: List[str]) -> Dict[str, Account]:
        ids = list(dict.fromkeys(account_ids))
        out: Dict[str, Account] = {}
        for i in range(0, len(ids), BATCH_GET):
            for a in ids[i:i + BATCH_GET]:
                account = self.db.account(a)
                if account is not None:
                    out[a] = account
                    self.db.read(("ACC", a), 1.0)
            self._trip()
        return out

    # --- BalanceStore -------------------------------------------------------------------------------
    def place_holds(self, call, refresh=None) -> None:
        db = self.db
        actions = []
        stored = call          # the service never changes it after this
        shard = held_shard(call.call_id)
        def apply() -> None:
            db.calls[call.call_id] = stored
            self.sim.committed("granted")

        actions.append(Action(("CALL", call.call_id), ("CALL", call.call_id), ("call", None),
                              cond=lambda: call.call_id not in db.calls, apply=apply,
                              gsi=lambda: [("HELD", shard)]))
        for change in ledger.holds(call.levels, call.wants, call.authorized_at, call.counters, call.fresh):
            if not change.empty:
                actions.append(self.change_action(change))
        refused = self._commit(actions, f"hold {call.call_id}")
        if refused:
            if ("call", None) in refused:
                raise DuplicateCall(call.call_id)
            what, account_id = refused[0]
            raise Refused(account_id, what)

    def settle(self, call, charges, billsec: int, disposition: str, result: dict, now: int) -> None:
        db, was_held, status = self.db, call.status == HELD, call.status
        actions = []
        for change in ledger.debits(call.levels, charges, was_held):
            if not change.empty:
                actions.append(self.change_action(change))

        def cond() -> bool:
            record = db.calls.get(call.call_id)
            return record is not None and record.status == status

        def apply() -> None:
            db.calls[call.call_id] = replace(db.calls[call.call_id], status=DONE, result=result)

        def gsi():
            # The record becomes the call's only CDR: its cdr_* keys add it to the sparse client_calls
            # (partition: the client) and tree_calls (partition: <root>#<shard>) indexes, 1 WCU each; a
            # held call also leaves the held index.
            out = [("CC", call.client_id), ("CT", tree_shard(call.levels[-1].account_id, call.call_id))]
            return out + [("HELD", held_shard(call.call_id))] if status == HELD else out

        actions.append(Action(("CALL", call.call_id), ("CALL", call.call_id), ("call", None), cond, apply, gsi))
        if self._commit(actions, f"settle {call.call_id}"):
            raise AlreadySettled(call.call_id)

    def release(self, call, now: int) -> bool:
        db = self.db
        actions = [self.change_action(c) for c in ledger.releases(call.levels) if not c.empty]
        actions.append(Action(("CALL", call.call_id), ("CALL", call.call_id), ("call", None),
                              cond=lambda: db.calls[call.call_id].status == HELD,
                              apply=lambda: db.calls.__setitem__(call.call_id, replace(db.calls[call.call_id],
                                                                                      status=EXPIRED)),
                              gsi=lambda: [("HELD", held_shard(call.call_id))]))
        return not self._commit(actions, f"release {call.call_id}")

    # --- EscrowStore (escrow_store.py) --------------------------------------------------------------
    def wanting_clients(self) -> List[str]:
        ids = []
        for shard in range(WANT_SHARDS):
            ids += sorted(self.db.wanting[shard])
            self._trip()
        return ids

    def escrow_owners(self) -> List[Tuple[str, int]]:
        out = [(o, r) for o, r in sorted(self.db.owners.items())]
        self._trip()
        return out

    def escrow_slots(self, owner_id: str) -> List[Tuple[str, int, int]]:
        rows = [(c, d, at) for c, (d, at) in sorted(self.db.registry.get(owner_id, {}).items())]
        for _ in range(max(1, math.ceil(len(rows) / QUERY_PAGE))):
            self._trip()
        return rows

    def request_recall(self, owner_id: str, now: int) -> None:
        self._write(Action(("OWN", owner_id), ("OWN",), ("owner_list", owner_id),
                           apply=lambda: self.db.owners.__setitem__(owner_id, now)), "recall")

    def clear_recall(self, owner_id: str, requested_at: int) -> None:
        try:
            self._write(Action(("OWN", owner_id), ("OWN",), ("owner_list", owner_id),
                               cond=lambda: self.db.owners.get(owner_id) == requested_at,
                               apply=lambda: self.db.owners.__setitem__(owner_id, 0)), "clear recall")
        except ConditionFailed:
            pass

    def clear_wants(self, client_ids) -> None:
        db = self.db
        for client in client_ids:
            def apply(client=client):
                item = db.items.get(client)
                if item is not None:
                    db.set_want(item, False)
                    item["_acc"] = None

            def gsi(client=client):
                item = db.items.get(client)
                return [("WANT", want_shard(client))] if item is not None and item["want"] is not None else []
            self._write(Action(("ACC", client), ("ACC", client), ("want", client), apply=apply, gsi=gsi),
                        "clear want")

    def _registry_batches(self, owner_id: str, rows: List[Tuple[str, Optional[Tuple[int, int]]]], what: str):
        """BatchWriteItem of registry entries (ESC#<owner>/<client>): (client, (distance, at)) puts,
        (client, None) deletes; 1 WCU each on the owner's partition key."""
        db = self.db
        for i in range(0, len(rows), BATCH_WRITE):
            actions = []
            for client, entry in rows[i:i + BATCH_WRITE]:
                def apply(client=client, entry=entry):
                    if entry is None:
                        db.registry.get(owner_id, {}).pop(client, None)
                    else:
                        db.registry[owner_id][client] = entry
                actions.append(Action(("ESC", owner_id, client), registry_partition(owner_id, client),
                                      ("registry", client), apply=apply))
            self._retrying(lambda actions=actions: db.batch(actions), lambda: self.sim.rng.uniform(*RTT), what)

    def forget_slots(self, owner_id: str, client_ids) -> None:
        self._registry_batches(owner_id, [(c, None) for c in client_ids], "forget slots")

    def create_pools(self, owner_id: str, pool_ids) -> None:
        """escrow_store.create_pools: one conditional PutItem each (1 WCU, on the pool's own key)."""
        for pid in pool_ids:
            if pid not in self.db.items:
                self.db.add_account(pid, "pool", owner_id, ZERO)
            self.db.wcu[("ACC", pid)] += 1
        self._trip()

    def touch_slots(self, owner_id: str, entries) -> None:
        """escrow_store.touch_slots: registry entries re-dated to the slot's last use."""
        self.touched += len(entries)
        self._registry_batches(owner_id, [(c, (d, used_at)) for c, d, used_at in entries], "touch slots")

    def apply_moves(self, owner_id: str, moves, change, now: int, clear_wants=(), list_owner: bool = True) -> List:
        db = self.db
        actions = []
        owner_change = ledger.BalanceChange(owner_id, balance=change.balance, held=change.held,
                                            available=change.available, min_available=change.min_available,
                                            active_only=change.min_available is not None, what="escrow")
        if not owner_change.empty:
            actions.append(self.change_action(owner_change, must_exist=True))
        clear = set(clear_wants)
        for move in moves:
            sc = move.slot_change()
            client, k = move.client_id, move.distance

            def cond(client=client, sc=sc) -> bool:
                item = db.items.get(client)
                return item is not None and self._slot_ok(item, sc)

            def apply(client=client, sc=sc, k=k) -> None:
                item = db.items[client]
                self._slot_apply(item, sc)
                if client in clear:
                    slot = item["slots"].setdefault(k, {})
                    slot.pop("w", None)
                    slot.pop("n", None)
                    db.set_want(item, False)
                db.touched(item, [k])

            def gsi(client=client):
                item = db.items.get(client)
                return [("WANT", want_shard(client))] if (client in clear and item is not None
                                                          and item["want"] is not None) else []
            actions.append(Action(("ACC", client), ("ACC", client), ("slot", client), cond, apply, gsi))
            if move.register:
                actions.append(Action(("ESC", owner_id, client), registry_partition(owner_id, client),
                                      ("registry", client),
                                      apply=lambda client=client, k=k: db.registry[owner_id].__setitem__(
                                          client, (k, now))))
        if list_owner and any(m.register for m in moves):
            actions.append(Action(("OWN", owner_id), ("OWN",), ("owner_list", owner_id),
                                  apply=lambda: db.owners.setdefault(owner_id, 0)))
        refused = self._commit(actions, f"escrow {owner_id}")
        if not refused:
            return []
        refused_clients = {c for what, c in refused if what == "slot"}
        if any(what == "escrow" for what, _ in refused):
            return list(moves)
        return [m for m in moves if m.client_id in refused_clients]


# --- the steady state at t = 0 (escrow design) ------------------------------------------------------

def warm_slots(rng: random.Random, rate: float, clients: int, callers: Sequence[Tuple[str, str]],
               idle_phase: float, tick_phase: float, funds: Dict[str, Decimal]):
    """The callers' slots (distance 1: their sub, 2: the top) as the escrow rules leave them after WARMUP
    seconds of Poisson calls at rate/clients each, all callers and owners together in time order, the
    rebalancer's decisions taken by the real ``escrow.plan_owner`` (refill from plenty; a dry owner
    refills nothing and recalls its other slots) and ``escrow.plan_idle`` behind the real idle rule
    (registry entry older than IDLE_AFTER: re-dated to the slot's last use when a call used it since,
    else recalled). Calls complete at once; no contention (the run measures that).

    Returns ({client: {distance: (available, spent, registry_at, pending_request, used_at)}}, stats):
    times in whole simulated seconds (None: never), money in Decimal; stats about the top reseller's
    escrow traffic in the second half of the pre-history (see ``Sim.report``)."""
    lam = rate / clients
    cycle = IDLE_AFTER + IDLE_EVERY / 2           # a slot stays warm while its calls are closer than ~this
    hold = {1: HOLD["sub"], 2: HOLD["top"]}
    nets = {d: [call_cost(RATES_BY_LEVEL[lvl], b) for b in range(0, 121)] for d, lvl in ((1, "sub"), (2, "top"))}
    slots: Dict[Tuple[str, int], list] = {}      # [owner, available, spent, registry_at, used_at, pending]
    by_owner: Dict[str, List[Tuple[str, int]]] = defaultdict(list)
    owners: Dict[str, list] = {}                 # [balance, held]
    events = []
    for idx, (client, sub) in enumerate(callers):
        for d, owner in ((1, sub), (2, "top")):
            if owner not in owners:
                owners[owner] = [funds[owner], ZERO]
            # The stationary mix of a slot's cycle under last-use aging: warm with probability
            # 1 - exp(-lam x cycle) (the chance a call came within the last cycle), so the callers'
            # cycles are not synchronised by a common start.
            if rng.random() < 1 - math.exp(-lam * cycle):
                used = math.floor(-WARMUP - rng.uniform(0, IDLE_AFTER))
                st = [owner, REFILL_HOLDS * hold[d], ZERO, used, used, False]
                owners[owner][1] += st[1]
            else:
                st = [owner, ZERO, ZERO, math.floor(-WARMUP - cycle - IDLE_EVERY), None, False]
            slots[(client, d)] = st
            by_owner[owner].append((client, d))
        t = -WARMUP + rng.expovariate(lam)
        while t < 0:
            events.append((t, idx, rng.randint(30, 120)))
            t += rng.expovariate(lam)
    events.sort()
    parents = {sub: "top" for _, sub in callers}
    parents["top"] = "admin"

    def account(owner: str) -> Account:
        balance, held = owners[owner]
        return Account(id=owner, role=RESELLER, parent_id=parents[owner], tariff_id=TARIFF_OF[level_of(owner)],
                       balance=balance, held=held)

    def slot(client: str, d: int) -> Slot:
        owner, a, s, at, used, pend = slots[(client, d)]
        return Slot(distance=d, owner=owner if at is not None else None, available=a, spent=s, need=hold[d],
                    wanted_by=owner if pend else None, used_at=used or 0)

    def apply(owner: str, m, now: int) -> None:
        st, o = slots[(m.client_id, m.distance)], owners[owner]
        st[1] += m.refill - m.recall
        st[2] -= m.sweep
        if m.register:
            st[3] = now                            # the registry put (fills the slot from empty)
        o[0] -= m.sweep
        o[1] += m.refill - m.recall - m.sweep

    ticks, k = [], 1
    while tick_phase - k > -WARMUP:
        ticks.append(tick_phase - k)
        k += 1
    ticks.reverse()
    idle_times, p = [], idle_phase
    while p > -WARMUP:
        idle_times.append(p)
        p -= IDLE_EVERY
    idle_times.sort()
    stats = Counter()
    stats_from = -WARMUP / 2
    pending: Dict[Tuple[str, int], None] = {}
    e = j = 0
    for tick in ticks + [0.0]:
        while e < len(events) and events[e][0] < tick:
            t, idx, billsec = events[e]
            e += 1
            client = callers[idx][0]
            for d in (1, 2):
                st, h = slots[(client, d)], hold[d]
                if st[3] is not None and st[1] >= h:          # escrow.place: the slot covers the hold
                    want = st[1] - h < h
                    st[1] -= nets[d][billsec]
                    st[2] += nets[d][billsec]
                    st[4] = math.floor(t)                     # e<k>u
                    own = False
                else:
                    owners[st[0]][0] -= nets[d][billsec]       # held (and billed) on the owner's item
                    want = own = True
                if want:
                    st[5] = True
                    pending[(client, d)] = None
                if d == 2 and t >= stats_from:
                    stats["top_holds"] += 1
                    stats["top_own_holds"] += own
        if tick == 0.0:
            break
        now = math.floor(tick)
        counted = tick >= stats_from
        wanted: Dict[str, List[Tuple[str, int]]] = defaultdict(list)
        for key in pending:
            wanted[slots[key][0]].append(key)
        pending = {}
        for owner in sorted(wanted):                   # rebalance step 1 (services.rebalance._serve_owner)
            acc = account(owner)
            asks = [(c, slot(c, d)) for c, d in wanted[owner]]
            moves, dry = plan_owner(acc, asks, ())
            if dry:
                asked = {c for c, _ in asks}
                others = [(c, slot(c, d)) for c, d in by_owner[owner]
                          if c not in asked and slots[(c, d)][3] is not None]
                moves, _ = plan_owner(acc, asks, others)
                stats["dry_ticks"] += 1
            for m in moves:
                apply(owner, m, now)
            for key in wanted[owner]:
                slots[key][5] = False
            if owner != "top" and counted:
                stats["sub_refills"] += sum(1 for m in moves if m.refill)
                stats["sub_registers"] += sum(1 for m in moves if m.register)
            if owner == "top" and counted:
                stats["top_wants"] += len(wanted[owner])
                refills = sum(1 for m in moves if m.refill)
                stats["top_refills"] += refills
                stats["top_registers"] += sum(1 for m in moves if m.register)
                stats["top_moves"] += len(moves)
                stats["top_tx"] += math.ceil(len(moves) / MOVES_PER_TRANSACTION)
                stats["top_max_refills_tick"] = max(stats["top_max_refills_tick"], refills)
        idle = j < len(idle_times) and tick >= idle_times[j]
        while j < len(idle_times) and idle_times[j] <= tick:
            j += 1
        if idle:                                       # rebalance step 3 (services.rebalance._recall_idle)
            for owner in sorted(by_owner):
                touched = recalled = 0
                for c, d in by_owner[owner]:
                    st = slots[(c, d)]
                    if st[3] is None or not st[3] < now - IDLE_AFTER:
                        continue
                    if (st[4] or 0) >= now - IDLE_AFTER:
                        st[3] = st[4]                   # touch_slots: in use, re-dated to its last use
                        touched += 1
                        continue
                    m = plan_idle(owner, c, slot(c, d))
                    if m is not None:
                        apply(owner, m, now)
                        recalled += 1
                    elif st[3] < now - REGISTRY_KEEP:
                        st[3] = None                    # forget_slots (never within WARMUP)
                if owner == "top" and counted:
                    stats["idle_passes"] += 1
                    stats["top_touched"] += touched
                    stats["top_idle_recalls"] += recalled
                    stats["top_max_touched_pass"] = max(stats["top_max_touched_pass"], touched)
    stats["seconds"] = -stats_from
    out = {c: {d: tuple(slots[(c, d)][1:3]) + (slots[(c, d)][3], slots[(c, d)][5], slots[(c, d)][4])
               for d in (1, 2)} for c, _ in callers}
    return out, dict(stats)


_WARM: Dict[tuple, dict] = {}


# --- one run --------------------------------------------------------------------------------------

class Sim:
    def __init__(self, design: str, rate: float, window_ms: float, calls: int, seed: int, clients: int,
                 subs: int, top_funds: Optional[Decimal], dry: bool, partitions: bool, store_class):
        self.design, self.rate, self.window = design, rate, window_ms / 1000.0
        self.calls, self.seed, self.clients, self.subs, self.dry = calls, seed, clients, subs, dry
        self.sched = Scheduler()
        self.rng = random.Random(f"ops:{seed}:{design}:{rate}:{window_ms}:{dry}")
        self.w0, self.w1 = 0.0, calls / rate      # the measured window (set by setup)
        self.db = Db(self, self.window, partitions)
        self.store = (store_class or SimStore)(self)
        self.top_funds = TOP_FUNDS if top_funds is None else top_funds
        self.initial_wallet: Dict[str, Decimal] = {}
        self.outstanding = 0
        self.stats = Counter()
        self.window_stats = Counter()
        self.latencies: List[float] = []
        self.denials: Counter = Counter()
        self.false_denials = 0
        self.ticks = self.tick_failures = 0
        self.tick_phase = random.Random(f"tick:{seed}").uniform(0, TICK)     # the rebalancer's first tick
        self.pre_history: Optional[dict] = None

    def clock(self) -> float:
        return T0 + self.sched.now

    def measured(self, t: float) -> bool:
        return self.w0 <= t <= self.w1

    def committed(self, what: str) -> None:
        """An answer that took effect (a hold committed, a denial decided) now, counted if in the window."""
        if self.measured(self.sched.now):
            self.window_stats[what] += 1

    @property
    def span(self) -> float:
        return self.w1 - self.w0

    # --- the tree and the arrivals ------------------------------------------------------------------
    def setup(self):
        arrivals = random.Random(f"arrivals:{self.seed}:{self.rate}:{self.calls}:{self.clients}:{self.dry}")
        schedule, t = [], 0.0
        for n in range(self.calls):
            t += arrivals.expovariate(self.rate)
            i = arrivals.randrange(self.clients)
            billsec = arrivals.randint(30, 120)
            delay = arrivals.uniform(*(REAL_DURATION if self.dry else COMPLETION_DELAY))
            schedule.append((t, client_id(i), i, f"call-{n}", billsec, delay, arrivals.uniform(*RTT)))
        # Measured: arrivals and writes from the moment completions run at their steady rate (the
        # longest compressed completion delay) to the last arrival; the first part only warms up.
        self.w1 = t
        self.w0 = 0.0 if self.dry else min(COMPLETION_DELAY[1], t / 2)
        db = self.db
        db.add_account("admin", ADMIN, None, ZERO)
        db.add_account("top", RESELLER, "admin", self.top_funds)
        callers = sorted({(c, i) for _, c, i, _, _, _, _ in schedule})
        for c, i in callers:
            sub = sub_of(i, self.subs)
            if sub not in db.items:
                db.add_account(sub, RESELLER, "top", SUB_FUNDS)
            db.add_account(c, CLIENT, sub, CLIENT_FUNDS)
            chain = [db.account(c), db.account(sub), db.account("top"), db.account("admin")]
            db.routes[c] = Route.of_chain(chain)
        warm_rng = random.Random(f"warm:{self.seed}:{self.rate}:{self.clients}")
        idle_phase = -IDLE_EVERY / 2     # the last idle pass: the run sits mid-way between two
        self.idle_next = idle_phase + IDLE_EVERY
        if self.design == "current":
            for c, i in callers:
                item = db.items[c]
                for d, owner in ((1, sub_of(i, self.subs)), (2, "top")):
                    item["slots"][d] = {"w": owner, "n": HOLD[level_of(owner)]}
                db.set_want(item, True)
        elif not self.dry:
            memo = (self.seed, self.rate, self.calls, self.clients, self.subs, self.top_funds)
            warm = _WARM.get(memo)
            if warm is None:        # the same for every lock window: computed once per process
                pairs = [(c, sub_of(i, self.subs)) for c, i in callers]
                funds = {sub: SUB_FUNDS for _, sub in pairs}
                funds["top"] = self.top_funds
                warm = _WARM[memo] = warm_slots(warm_rng, self.rate, self.clients, pairs, idle_phase,
                                                self.tick_phase, funds)
            warm, self.pre_history = warm
            self.pre_history = dict(self.pre_history, callers=len(callers))
            for c, i in callers:
                item = db.items[c]
                for d, owner in ((1, sub_of(i, self.subs)), (2, "top")):
                    a, s, at, pend, used = warm[c][d]
                    slot = {}
                    if at is not None:
                        slot.update(o=owner, a=a, s=s)
                        if used is not None:
                            slot["u"] = T0 + used
                        db.registry[owner][c] = (d, T0 + at)
                        db.owners.setdefault(owner, 0)
                        db.escrow_avail[owner] += a
                        o = db.items[owner]
                        o["balance"] += s
                        o["held"] += a + s
                        o["available"] -= a
                    if pend:
                        slot.update(w=owner, n=HOLD[level_of(owner)])
                        db.set_want(item, True)
                    if slot:
                        item["slots"][d] = slot
        if self.design == "escrow" and self.dry:
            # The top ran dry at the last tick: the rebalancer recalled its escrow (none is out here) and
            # spread what its item had left over its pools.
            self._pools()
        elif self.design == "escrow":
            # A top reseller with plenty whose calls keep missing their clients' slots keeps about
            # POOL_PASSES passes' worth of those holds in its pools: the pre-history's average pass, whose
            # callers are this run's (scaled to the whole tree, as rebalancer_load does).
            per_pass = (self.pre_history.get("top_wants", 0) / max(1, self.pre_history.get("seconds", 1))
                        * self.clients / max(1, len(callers)))
            self.pre_history["top_wants_per_pass"] = round(per_pass, 1)
            if per_pass >= POOL_AFTER:
                self._pools(POOL_PASSES * round(per_pass) * HOLD["top"])
        spent: Dict[str, Decimal] = defaultdict(lambda: ZERO)
        for item in db.items.values():
            for s in item["slots"].values():
                if s.get("o") is not None:
                    spent[s["o"]] += s.get("s") or ZERO
        for item in db.items.values():
            item["_acc"] = None
            self.initial_wallet[item["id"]] = item["balance"] - spent[item["id"]]
            if item["available"] < 0:
                raise ValueError(f"{item['id']} starts overdrawn: fund it more")
        for t, c, _, call_id, billsec, delay, lookup_rtt in schedule:
            self.outstanding += 1
            self.sched.at(t + lookup_rtt, self._arrival(t, c, call_id, billsec, delay))
        if self.design == "escrow":
            self.sched.at(self.tick_phase, self._ticker)

    def _pools(self, wanted: Optional[Decimal] = None) -> None:
        """The top's pools as the last tick left them (services.rebalance._fill_pools: the amounts from
        the real escrow.plan_pools, the bookkeeping of apply_moves by hand)."""
        db = self.db
        pools = [pool_id("top", k) for k in range(POOLS)]
        for m in plan_pools(db.account("top"), [(p, None) for p in pools], wanted):
            pool = db.add_account(m.client_id, POOL, "top", ZERO)
            pool["slots"][1] = {"o": "top", "a": m.refill, "u": T0}
            db.escrow_avail["top"] += m.refill
            db.registry["top"][m.client_id] = (1, T0)
            db.owners.setdefault("top", 0)
            top = db.items["top"]
            top["held"] += m.refill
            top["available"] -= m.refill

    # --- tasks ----------------------------------------------------------------------------------------
    def _arrival(self, start: float, client: str, call_id: str, billsec: int, delay: float):
        def task():
            done = True
            measured = self.measured(start)
            outcome = "error"
            try:
                result = authorize_call(self.store, AuthorizeRequest(client, NUMBER, call_id), KEY_HASH, self.clock)
                if isinstance(result, Authorized):
                    outcome, done = "granted", False
                    # the switch cuts the call at the granted time (billing past it is a late/over-max
                    # bill, allowed below the floor by design and not what this measures)
                    billed = min(billsec, result.answer["max_duration"])
                    self.sched.at(self.sched.now + delay, self._completion(call_id, billed))
                else:
                    outcome = "denied"
                    self.denials[result.reason] += 1
                    if result.reason == INSUFFICIENT_FUNDS and result.account_id in self.db.items:
                        item = self.db.items[result.account_id]
                        total = item["available"] + max(ZERO, self.db.escrow_avail[result.account_id])
                        if total >= MIN_GRANT[level_of(result.account_id)]:
                            self.false_denials += 1
            except StoreBusy:
                outcome = "busy"
            finally:
                self.stats[outcome] += 1
                if outcome == "denied":
                    self.committed("denied")
                if measured:
                    self.window_stats["arrived"] += 1
                    self.window_stats["arrived_" + outcome] += 1
                    self.latencies.append(self.sched.now - start)
                if done:
                    self.outstanding -= 1
        return task

    def _completion(self, call_id: str, billsec: int):
        def task():
            try:
                complete_call(self.store, call_id, billsec, "ANSWERED", KEY_HASH, self.clock)
                self.stats["completed"] += 1
            except StoreBusy:
                self.stats["settle_busy"] += 1      # left held: the switch's re-send comes after the run
            finally:
                self.outstanding -= 1
        return task

    def _ticker(self):
        """rebalancer.run: a tick, then sleep TICK; the idle pass on the first tick of each IDLE_EVERY."""
        while self.outstanding > 0:
            idle = self.sched.now >= self.idle_next
            try:
                rebalance(self.store, int(self.clock()), idle=idle)
                if idle:
                    self.idle_next = self.sched.now + IDLE_EVERY
            except StoreBusy:
                self.tick_failures += 1
            self.ticks += 1
            self.sched.sleep(TICK)

    # --- the checks -------------------------------------------------------------------------------------
    def conservation(self) -> List[str]:
        db, problems = self.db, []
        charged: Dict[str, Decimal] = defaultdict(lambda: ZERO)
        own_holds: Dict[str, Decimal] = defaultdict(lambda: ZERO)
        from_slots: Dict[str, Decimal] = defaultdict(lambda: ZERO)
        own_calls: Counter = Counter()
        for record in db.calls.values():
            if record.status == DONE:
                for lv in record.result["levels"]:
                    charged[lv["account_id"]] += Decimal(lv["charged"])
            elif record.status == HELD:
                for lv in record.levels:
                    if not lv.charged:
                        continue
                    if lv.escrow or lv.pool:
                        from_slots[lv.account_id] += lv.hold
                    else:
                        own_holds[lv.account_id] += lv.hold
                        own_calls[lv.account_id] += 1
        spent: Dict[str, Decimal] = defaultdict(lambda: ZERO)
        outstanding: Dict[str, Decimal] = defaultdict(lambda: ZERO)
        for item in db.items.values():
            for k, s in item["slots"].items():
                if s.get("o") is None:
                    continue
                spent[s["o"]] += s.get("s") or ZERO
                outstanding[s["o"]] += (s.get("a") or ZERO) + (s.get("s") or ZERO)
                if (s.get("a") or ZERO) < 0:
                    problems.append(f"{item['id']} slot {k} available {s.get('a')}")
        for a, item in db.items.items():
            if item["role"] == POOL:
                continue            # a pool's one slot is counted with its owner (outstanding, from_slots)
            wallet = item["balance"] - spent[a]
            if a != "admin" and wallet != self.initial_wallet[a] - charged[a]:
                problems.append(f"{a}: wallet {wallet} != {self.initial_wallet[a]} - {charged[a]}")
            expect = own_holds[a] + from_slots[a] + outstanding[a]
            if item["held"] != expect:
                problems.append(f"{a}: held {item['held']} != own holds {own_holds[a]} + slots {outstanding[a]}"
                                f" + in flight from slots {from_slots[a]}")
            if item["available"] != item["balance"] - item["held"]:
                problems.append(f"{a}: available {item['available']} != balance - held")
            if item["active_calls"] != own_calls[a]:
                problems.append(f"{a}: active_calls {item['active_calls']} != {own_calls[a]}")
            if item["available"] < 0:
                problems.append(f"{a}: available {item['available']} below its floor at the end")
        return problems

    def report(self, wall: float) -> dict:
        db, span = self.db, self.span
        lat = sorted(self.latencies)

        def pct(p):
            return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None
        # the most units; among equals, the first name (as in top_keys)
        hot_key, hot_wcu = min(db.wcu.items(), key=lambda kv: (-kv[1], _key_name(kv[0])), default=(("-",), 0))
        hot_item, item_wcu = min(db.item_wcu.items(), key=lambda kv: (-kv[1], _key_name(kv[0])),
                                 default=(("-",), 0))
        hot_read, read_rcu = max(db.rcu.items(), key=lambda kv: kv[1], default=(("-",), 0))
        idle_escrow = sum(((s.get("a") or ZERO) for it in db.items.values() for s in it["slots"].values()
                           if s.get("o") is not None), ZERO)
        problems = self.conservation()
        out = {
            "design": self.design, "offered_per_s": self.rate, "window_ms": round(self.window * 1000),
            "clients": self.clients,
            "calls": self.calls, "arrival_span_s": round(self.w1, 3), "dry": self.dry,
            "granted": self.stats["granted"], "denied": self.stats["denied"], "busy_503": self.stats["busy"],
            "measured_s": round(span, 3),
            "arrived_per_s": round(self.window_stats["arrived"] / span, 1),
            "granted_per_s": round(self.window_stats["granted"] / span, 1),
            "denied_per_s": round(self.window_stats["denied"] / span, 1),
            # the window's arrivals answered 503 (arrivals - commits would mostly measure the window's
            # edges: the commits of a 0.1 s window lag its arrivals by a round trip or more)
            "busy_per_s": round(self.window_stats["arrived_busy"] / span, 1),
            "denials": dict(self.denials), "false_denials": self.false_denials,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "top_item_wcu_per_s": round(db.wcu.get(("ACC", "top"), 0) / span),
            "hottest_item": _key_name(hot_item), "hottest_item_wcu_per_s": round(item_wcu / span),
            "hottest_key": _key_name(hot_key), "hottest_key_wcu_per_s": round(hot_wcu / span),
            "throttled_keys": [k for k, _ in db.throttled_by.most_common(4)],
            "throttled_by_key": dict(db.throttled_by.most_common(8)),
            "hottest_read_key": _key_name(hot_read), "hottest_read_rcu_per_s": round(read_rcu / span),
            "conflicts_per_s": round(db.conflicts / span, 1), "throttles_per_s": round(db.throttles / span, 1),
            "conflicts": db.conflicts_all, "throttles": db.throttles_all,
            "completed": self.stats["completed"], "settle_503s": self.stats["settle_busy"],
            "idle_escrow": str(idle_escrow),
            "overdrafts": len(db.overdrafts), "overdraft_examples": db.overdrafts[:3],
            "conservation": "ok" if not problems else "FAIL", "conservation_problems": problems[:5],
            "rebalancer_ticks": self.ticks, "rebalancer_failed_ticks": self.tick_failures,
            "registry_touched": self.store.touched,
            "top_keys": [(_key_name(k), round(w / span)) for k, w in
                         sorted(db.wcu.items(), key=lambda kv: (-kv[1], _key_name(kv[0])))[:6]],
            "max_wcu_by_family": {fam: min(((_key_name(k), round(w / span)) for k, w in db.wcu.items()
                                            if k[0] == fam), key=lambda kw: (-kw[1], kw[0]), default=None)
                                  for fam in ("ACC", "HELD", "CT", "CC", "WANT", "ESC", "OWN", "CALL")},
            "pre_history": self.pre_history,
            "errors": self.sched.errors[:3], "wall_s": round(wall, 2),
        }
        if self.dry:
            payable = int(self.top_funds / HOLD["top"])
            out["payable"] = payable
            out["payable_share_granted"] = round(min(self.stats["granted"], payable) / payable, 4)
        return out


def run(design: str = "escrow", rate: float = 5000, window_ms: float = 5, calls: Optional[int] = None,
        seed: int = 1, clients: int = CLIENTS, subs: int = SUBS, top_funds: Optional[Decimal] = None,
        dry: bool = False, partitions: bool = True, store_class=None, cap: int = CAP) -> dict:
    """One simulated run; returns its figures (see ``Sim.report``). ``dry``: the top reseller holds
    exactly ``calls // 2`` holds (unless ``top_funds`` says otherwise), its escrow starts empty and
    calls outlast the burst."""
    if design not in ("current", "escrow"):
        raise ValueError(design)
    calls = calls if calls is not None else int(min(rate * 2, cap))
    if dry and top_funds is None:
        top_funds = HOLD["top"] * (calls // 2)
    started = time.perf_counter()
    loggers = [logging.getLogger(n) for n in ("cascade", "cascade.authorize", "cascade.complete",
                                              "cascade.rebalance", "cascade.store")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        sim = Sim(design, rate, window_ms, calls, seed, clients, subs, top_funds, dry, partitions, store_class)
        sim.setup()
        sim.sched.run()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return sim.report(time.perf_counter() - started)


# --- the command line -----------------------------------------------------------------------------

def _job(spec: dict) -> dict:
    return run(**spec)


def _pin() -> None:
    """Each pool process on a core of its own: thread hand-offs are cheaper without migrations."""
    try:
        import multiprocessing
        ident = multiprocessing.current_process()._identity
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[((ident[0] - 1) if ident else 0) % len(cpus)]})
    except (AttributeError, OSError):
        pass


def specs(quick: bool, seed: int, partitions: bool, windows=WINDOWS_MS) -> List[dict]:
    cap = QUICK_CAP if quick else CAP
    out = [dict(design=d, rate=r, window_ms=w, seed=seed, partitions=partitions, cap=cap)
           for d in ("current", "escrow") for r in RATES for w in windows]
    out.append(dict(design="escrow", rate=5000, window_ms=windows[len(windows) // 2], seed=seed,
                    partitions=partitions, dry=True,
                    calls=QUICK_CAP if quick else CAP, cap=cap))
    return out


def table(results: List[dict]) -> str:
    head = ["design", "offered/s", "W ms", "calls", "arrived/s", "granted/s", "503/s", "false denials",
            "p50 ms", "p99 ms", "ACC#top WCU/s", "hottest key (WCU/s)", "keys throttled", "conflicts/s",
            "throttles/s", "settle 503s", "idle escrow $", "overdrafts", "conservation"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        name = r["design"] + (" DRY" if r["dry"] else "")
        rows.append("| " + " | ".join(str(x) for x in (
            name, r["offered_per_s"], r["window_ms"], r["calls"], r["arrived_per_s"], r["granted_per_s"],
            r["busy_per_s"], r["false_denials"], r["p50_ms"], r["p99_ms"], r["top_item_wcu_per_s"],
            f"{r['hottest_key']} ({r['hottest_key_wcu_per_s']})", " ".join(r["throttled_keys"][:3]) or "-",
            r["conflicts_per_s"], r["throttles_per_s"], r["settle_503s"],
            f"{Decimal(r['idle_escrow']):.2f}", r["overdrafts"], r["conservation"])) + " |")
    return "\n".join(rows)


def _fmt(x: float) -> str:
    return f"{x:,.0f}"


def rebalancer_load(r: dict) -> Optional[dict]:
    """The top reseller's escrow traffic at steady state, per second of the whole tree: the pre-history's
    counts (its second half, the callers only) scaled by clients / callers. Not measured under contention:
    the rebalancer ticks once a second and the windows at 5,000/s and above are shorter than that."""
    ph = r.get("pre_history")
    if not ph or not ph.get("callers"):
        return None
    scale = r["clients"] / ph["callers"]
    per_s = {k: ph.get(k, 0) / ph["seconds"] * scale
             for k in ("top_refills", "top_registers", "top_touched", "sub_refills")}
    passes = max(1, ph.get("idle_passes", 0))
    # ESC#top#<shard>: 2 WCU per slot filled from empty (inside the refill transactions) + 1 per last-use
    # re-dating (idle passes), spread over ESCROW_REGISTRY_SHARDS partitions by client
    esc = 2 * per_s["top_registers"] + per_s["top_touched"]
    return {
        "scale": scale, "refills_per_s": per_s["top_refills"], "registers_per_s": per_s["top_registers"],
        "touches_per_s": per_s["top_touched"],
        "touch_burst": ph.get("top_touched", 0) / passes * scale,
        "esc_top_wcu_per_s": esc, "esc_partition_wcu_per_s": esc / ESCROW_REGISTRY_SHARDS,
        "top_from_slot": 1 - ph.get("top_own_holds", 0) / max(1, ph.get("top_holds", 0)),
        "idle_recalls_per_s": ph.get("top_idle_recalls", 0) / ph["seconds"] * scale,
    }


def findings(results: List[dict], dry: dict) -> List[str]:
    """A few conclusions read off the runs (500, 5,000 and 10,000/s, every lock window)."""
    by = {(r["design"], r["offered_per_s"], r["window_ms"]): r for r in results}
    out = []
    for rate in (500, 5000, 10000):
        for design in ("current", "escrow"):
            rs = [by[(design, rate, w)] for w in WINDOWS_MS if (design, rate, w) in by]
            if not rs:
                continue
            keys = list(dict.fromkeys(r["hottest_key"] for r in rs))
            ws = "/".join(str(r["window_ms"]) for r in rs)
            if len(keys) == 1:
                hot = f"{keys[0]} at every W ({'/'.join(_fmt(r['hottest_key_wcu_per_s']) for r in rs)} WCU/s at W {ws} ms)"
            else:
                hot = ", ".join(f"{r['hottest_key']} ({_fmt(r['hottest_key_wcu_per_s'])}) at W {r['window_ms']}" for r in rs)
            busy = "/".join(str(r["busy_503"]) for r in rs)
            throttled = sorted({k for r in rs for k in r["throttled_keys"]})
            mid = rs[len(rs) // 2]
            line = (f"- {_fmt(rate)}/s {design}: hottest key {hot}; 503s {busy} of {rs[0]['calls']} calls; "
                    f"ACC#top {_fmt(mid['top_item_wcu_per_s'])} WCU/s, {_fmt(mid['conflicts_per_s'])} conflicts/s "
                    f"at W {mid['window_ms']} ms; ")
            line += ("keys throttled: " + " ".join(throttled)) if throttled else "no key throttled"
            out.append(line)
    top = [r for r in results if r["design"] == "escrow" and r["offered_per_s"] == max(RATES)]
    if top and any(top[len(top) // 2]["max_wcu_by_family"].get(f) for f in ("HELD", "CT")):
        r = top[len(top) // 2]
        fam = r["max_wcu_by_family"]

        def f(name):
            return f"{fam[name][0]} {_fmt(fam[name][1])}" if fam.get(name) else "-"
        out.append(f"- indexes at {_fmt(r['offered_per_s'])}/s (escrow, W {r['window_ms']} ms), busiest partition of "
                   f"each: held ({HELD_SHARDS} shards) {f('HELD')}, tree_calls ({CDR_SHARDS} shards) {f('CT')}, "
                   f"client_calls {f('CC')}, wants ({WANT_SHARDS} shards) {f('WANT')} WCU/s, against "
                   f"{_fmt(WCU_PER_S)} per partition key")
    loads = []
    for rate in (500, 5000, 10000):
        r = by.get(("escrow", rate, 5))
        load = rebalancer_load(r) if r else None
        if load is None:
            continue
        verdict = "OVER" if load["esc_partition_wcu_per_s"] > WCU_PER_S else "under"
        loads.append(
            f"  - {_fmt(rate)}/s (x{load['scale']:.0f}): {100 * load['top_from_slot']:.1f}% of top-level holds from "
            f"slots; ~{_fmt(load['refills_per_s'])} refills/s of the top's slots, ~{_fmt(load['registers_per_s'])} "
            f"of them from empty (a 2 WCU registry put each, in the ticks) + ~{_fmt(load['touches_per_s'])} "
            f"last-use re-datings/s (1 WCU, bursts of ~{_fmt(load['touch_burst'])} per {IDLE_EVERY} s idle pass) "
            f"= ~{_fmt(load['esc_top_wcu_per_s'])} WCU/s over ESC#top's {ESCROW_REGISTRY_SHARDS} partitions, "
            f"~{_fmt(load['esc_partition_wcu_per_s'])} each, {verdict} {_fmt(WCU_PER_S)}; idle recalls "
            f"~{_fmt(load['idle_recalls_per_s'])}/s")
    if loads:
        out.append("- the rebalancer's own writes, estimated from the escrow pre-history (real plan_owner and "
                   "idle rules, no contention, scaled by clients / callers; at 5,000/s and up a run is shorter "
                   "than its 1 s tick, so the table has none of them):")
        out += loads
    if dry:
        out.append(f"- dry owner: {100 * dry['payable_share_granted']:.1f}% of the {dry['payable']} payable calls "
                   f"granted (target >= 95%); {dry['busy_503']} of {dry['calls']} answered 503 "
                   f"({_fmt(dry['conflicts_per_s'])} transaction conflicts/s in all, most on its pools)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"at most {QUICK_CAP} calls per run")
    parser.add_argument("--json", action="store_true", help="print one JSON line with every figure last")
    parser.add_argument("--items-only", action="store_true",
                        help="throughput limit per item only (no CDR partitions, no index partitions)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lock-ms", type=float, action="append",
                        help="lock window(s) in ms instead of 2, 5, 10 (e.g. one measured on a dev stage: docs/deploy.md)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    todo = specs(args.quick, args.seed, not args.items_only, tuple(args.lock_ms) if args.lock_ms else WINDOWS_MS)
    order = sorted(range(len(todo)), key=lambda i: -min(todo[i]["rate"] * 2, todo[i].get("calls") or CAP))
    if args.jobs > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(args.jobs, initializer=_pin) as pool:
            done = pool.map(_job, [todo[i] for i in order], chunksize=1)
    else:
        _pin()
        done = [_job(todo[i]) for i in order]
    results = [None] * len(todo)
    for i, r in zip(order, done):
        results[i] = r
    wall = time.perf_counter() - started
    normal, dry = results[:-1], results[-1]
    print(f"Cascade switch path under simulated DynamoDB load (seed {args.seed}; calls per run = "
          f"min(2 s x rate, {QUICK_CAP if args.quick else CAP}); "
          f"{'per-item' if args.items_only else 'per-partition-key'} limit {int(WCU_PER_S)} WCU/s, "
          f"lock window W; see the module docstring)\n")
    print(table(normal + [dry]))
    print("\nPer second of the measured window (first 50 ms of arrivals = warm-up). granted/s: holds committed;"
          " 503/s: the window's arrivals answered 503; WCU/s: units consumed (a saturated key ~1,000 + its 100 WCU"
          " burst); keys throttled: partition keys that ran out of units; settle 503s: completions that"
          " failed 6 attempts (left held); idle escrow: slots' available money on the callers' items at"
          " the end.")
    print(f"\nDry run: top funded for exactly {dry['payable']} holds, {dry['calls']} calls offered at "
          f"{dry['offered_per_s']}/s (escrow, W {dry['window_ms']} ms): granted {dry['granted']} = "
          f"{100 * dry['payable_share_granted']:.1f}% of the payable calls (target >= 95%); denials "
          f"{dry['denials']}, 503s {dry['busy_503']}, false denials {dry['false_denials']}.")
    found = findings(normal, dry)
    print("\nFindings:")
    print("\n".join(found))
    failed = [r for r in results if r["overdrafts"] or r["conservation"] != "ok" or r["errors"]]
    for r in failed:
        print(f"FAILED {r['design']} {r['offered_per_s']}/s W={r['window_ms']}: overdrafts "
              f"{r['overdraft_examples']} conservation {r['conservation_problems']} errors {r['errors']}")
    print(f"\nwall time {wall:.1f} s")
    if args.json:
        print(json.dumps({"seed": args.seed, "wall_s": round(wall, 1), "runs": normal, "dry": dry,
                          "findings": found},
                         separators=(",", ":"), default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
