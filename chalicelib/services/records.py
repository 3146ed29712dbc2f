"""Plain records the services exchange with their ports (no I/O here)."""
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from chalicelib.domain.accounts import Account, TreeSettings
from chalicelib.domain.authorization import Level, Usage
from chalicelib.domain.ledger import call_entry
from chalicelib.domain.settlement import charges_from_result
from chalicelib.domain.tariffs import Tariff

HELD, EXPIRED, DONE = "held", "expired", "done"


INBOUND = "inbound"


def call_answer(call_id: str, number: str, max_duration: int, rate, direction: Optional[str] = None,
                client_id: Optional[str] = None) -> dict:
    """What the switch is told when a call is granted (and again, byte for byte, on a repeat). An inbound
    call also names the client that has the DID, for the switch to ring."""
    answer = {
        "authorized": True, "max_duration": max_duration, "call_id": call_id,
        "number": number, "prefix": rate.prefix, "destination": rate.name,
        "rate": str(rate.price), "connect_fee": str(rate.connect_fee),
        "increments": [rate.initial, rate.subsequent],
    }
    if direction == INBOUND:
        answer.update(direction=INBOUND, client_id=client_id)
    return answer


def call_result(call_id: str, billsec: int, disposition: str, max_duration: int, late: bool, charges) -> dict:
    """A completion's answer (and its stored result): every level's charge at its own price."""
    return {
        "call_id": call_id, "billsec": billsec, "disposition": disposition,
        "charged": str(charges[0].cost), "over_max": billsec > max_duration, "late": late,
        "levels": [c.to_dict() for c in charges],
    }


@dataclass(frozen=True)
class RouteHop:
    account_id: str
    tariff_id: Optional[str]


@dataclass(frozen=True)
class Route:
    """A caller's chain as last seen (client first, root last), cached on its identity so authorize can
    read accounts and rates in one round trip. Never trusted: ``matches`` checks it against the
    accounts read with it."""
    client_id: str
    hops: Tuple[RouteHop, ...]
    dial_plan: Mapping = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"chain": [[h.account_id, h.tariff_id] for h in self.hops], "dial_plan": dict(self.dial_plan)}

    @classmethod
    def from_dict(cls, client_id: str, data: Mapping) -> "Route":
        # A route stored before the counters moved onto account items has a third element (limit flags).
        return cls(client_id, tuple(RouteHop(h[0], h[1]) for h in data["chain"]), dict(data.get("dial_plan") or {}))

    @classmethod
    def of_chain(cls, chain: List[Account]) -> "Route":
        settings = chain[-1].settings or TreeSettings()
        return cls(chain[0].id, tuple(RouteHop(a.id, a.tariff_id) for a in chain),
                   settings.dial_plan.to_dict())

    def matches(self, accounts: Mapping[str, Account]) -> bool:
        chain = [accounts.get(h.account_id) for h in self.hops]
        if any(a is None for a in chain):
            return False
        linked = all(child.parent_id == parent.id for child, parent in zip(chain, chain[1:]))
        return linked and chain[-1].parent_id is None and Route.of_chain(chain) == self


@dataclass
class CallRecord:
    call_id: str
    status: str
    account: str                 # what the switch sent
    client_id: str
    destination: str             # as dialled
    number: str                  # normalized
    authorized_at: int
    max_duration: int
    expires_at: int
    levels: List[Level]
    answer: dict
    caller_id: Optional[str] = None
    result: Optional[dict] = None
    switch_id: Optional[str] = None   # the key id of the switch that authorized it (None: recorded before calls carried it)
    wants: tuple = ()                 # escrow refill requests to write with the holds (not stored)
    counters: tuple = ()              # (account id, domain.counters.CounterChange) to write with them (not stored)
    fresh: tuple = ()                 # escrow slots whose CPS counter the holds start afresh (not stored)
    direction: Optional[str] = None   # "inbound": ``number`` is the DID called; None: outbound

    def visible_to(self, switch_id: Optional[str]) -> bool:
        """A switch sees only the calls it authorized itself (all keys of one switch id alike)."""
        return self.switch_id is None or self.switch_id == switch_id

    def same_request(self, switch_id: Optional[str], client_id: str, number: str) -> bool:
        """The fingerprint of an idempotent repeat: the same switch, paying account and dialled number."""
        return self.visible_to(switch_id) and self.client_id == client_id and self.number == number

    def journal_entry(self):
        """A finished call's journal entry (domain.ledger): the call record is the entry, its postings
        follow from the charges its completion stored. None while it is not billed."""
        if self.status != DONE or not self.result:
            return None
        charges = charges_from_result(self.result["levels"])
        return call_entry(self.call_id, self.client_id, self.number, charges, bool(self.result.get("late")))

    @property
    def applied(self) -> Tuple[int, str]:
        """(billsec, disposition) of the completion that billed it."""
        result = self.result or {}
        return int(result.get("billsec", -1)), str(result.get("disposition", ""))


@dataclass
class Snapshot:
    """Everything authorize reads in its second round trip."""
    accounts: Dict[str, Account]
    tariffs: Dict[str, Tariff]
    books: Dict[str, Dict[str, list]]
    usage: Dict[str, Usage]
    call: Optional[CallRecord] = None
    did: Optional[object] = None      # domain.dids.Did, when an inbound authorize asked for it


@dataclass(frozen=True)
class KeyCheck:
    """A switch key as read with the request: whether it may be used, and the switch it belongs to.
    Every key of one switch shares its id, so a rotation keeps the switch's calls reachable."""
    active: bool
    switch_id: Optional[str] = None


@dataclass(frozen=True)
class Lookup:
    key: KeyCheck
    route: Optional[Route]
    identity: Optional[str] = None


@dataclass(frozen=True)
class DidLookup:
    """An inbound authorize's first round trip: the key, and the DID called (domain.dids.Did) if any."""
    key: KeyCheck
    did: Optional[object] = None


@dataclass(frozen=True)
class CallView:
    """One level's view of a finished call (its CDR): what it paid (``buy``), what its child paid it
    (``sell``), its commission and profit. Built from the call record, the call's only CDR."""
    account_id: str
    call_id: str
    client_id: str
    role: str
    destination: str
    prefix: str
    destination_name: str
    disposition: str
    billsec: int
    billed_seconds: int
    buy: object
    sell: Optional[object]
    commission: object
    profit: Optional[object]
    over_max: bool
    started_at: int
    late: Optional[bool]
    cdr_id: str                 # <ISO time billed>#<h(call_id)>: the listings' order
    direction: str = "outbound"


def level_view(call: CallRecord, account_id: str, cdr_id: str) -> Optional[CallView]:
    """``account_id``'s view of a billed call, or None when it is not on the call's chain."""
    if not call.result:
        return None
    charges = charges_from_result(call.result["levels"])
    for level, charge in zip(call.levels, charges):
        if level.account_id == account_id:
            return CallView(
                account_id=account_id, call_id=call.call_id, client_id=call.client_id, role=level.role,
                destination=call.number, prefix=level.rate.prefix, destination_name=level.rate.name,
                disposition=call.result["disposition"], billsec=int(call.result["billsec"]),
                billed_seconds=charge.billed_seconds, buy=charge.cost, sell=charge.sell,
                commission=charge.commission, profit=charge.profit, over_max=bool(call.result["over_max"]),
                started_at=call.authorized_at, late=True if call.result.get("late") else None, cdr_id=cdr_id,
                direction=call.direction or "outbound")
    return None
