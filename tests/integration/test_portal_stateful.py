"""A hypothesis state machine over the demo tree: the portal's money routes (payments, charges, transfers,
credit limits) and status changes, driven by allowed callers with random amounts, interleaved with the
switch's calls (authorize / complete with random billsec) and the sweeper.

Each rule predicts its outcome from what is stored just before it (single-threaded, so exact) and checks
the answer and the account items after it; a refused request must change nothing. After every step:

  - double entry (helpers.assert_ledger_invariant): every entry sums to 0, each balance is the sum of
    its wallet's postings, available = balance + credit (postpaid) - held, held >= 0, active_calls >= 0;
  - money held is exactly the holds of the calls still in flight, level by level, and so are the call
    counts;
  - no prepaid or postpaid account is below 0 available unless a completion no hold guarded (a late one,
    after the sweeper released its hold) reached it.

Each run gets its own moto (started in __init__, stopped in teardown) and its own sessions, made once.
"""
import itertools
import time
from decimal import Decimal

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.conftest import demo_seed, load
from tests.integration.helpers import assert_ledger_invariant, body_of, post_authorize, post_complete
from tests.integration.portal_helpers import Portal, account_money, key, stored, table_snapshot

PATHS = {"admin": "admin", "atlas": "admin/atlas", "borealis": "admin/atlas/borealis",
         "cumulus": "admin/atlas/borealis/cumulus", "acme": "admin/atlas/borealis/cumulus/acme",
         "shortly": "admin/atlas/borealis/cumulus/shortly", "delta": "admin/delta", "echo": "admin/delta/echo"}
ALL = tuple(PATHS)
MANAGED = tuple(a for a in ALL if a != "admin")
ANCESTORS = {a: PATHS[a].split("/")[:-1] for a in MANAGED}
PARENT = {a: ANCESTORS[a][-1] for a in MANAGED}
TRANSFERABLE = tuple(a for a in MANAGED if PARENT[a] != "admin")     # a reseller's direct children
SIP_USERS = {"1001": "acme", "1002": "shortly", "2001": "echo"}
NUMBERS = ("15551230001", "14155550100", "14155550100", "447700900123")    # 44...: echo's tree has no rate
AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("80.00"), places=2)
LIMITS = st.decimals(min_value=Decimal("0"), max_value=Decimal("200.00"), places=2)
MONEY_FIELDS = ("balance", "held", "available", "credit_limit")
_ids = itertools.count(1)


def money_of(account_id):
    item = account_money()[account_id]
    return {f: item[f] for f in MONEY_FIELDS}


class PortalMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        from chalice.test import Client
        from moto import mock_aws

        from app import app
        from chalicelib import bootstrap
        from chalicelib.adapters.dynamo.models import create_tables
        bootstrap.use(None)
        self.mock = mock_aws()
        self.mock.start()
        create_tables()
        load(demo_seed())
        self._client_cm = Client(app)
        self.client = self._client_cm.__enter__()
        self.portal = Portal(self.client)
        self.status = {a: "active" for a in ALL}
        self.calls = {}              # call id -> {"state": held|expired|done, "max": granted seconds}
        self.unguarded = set()       # accounts a completion without a hold reached (late billing)

    def teardown(self):
        from chalicelib import bootstrap
        try:
            self._client_cm.__exit__(None, None, None)
        finally:
            self.mock.stop()
            bootstrap.use(None)

    # --- plumbing ---------------------------------------------------------------------------------

    def send(self, who, method, path, body=None):
        """A request by ``who`` with its cached session (a suspension drops the cache: see set_status),
        so a 401 is always wrong."""
        status, answer = self.portal(who, method, path, body)
        assert status != 401, (who, method, path, answer)
        return status, answer

    def active(self, who) -> bool:
        return self.status[who] == "active"

    def expect_refused(self, status, answer, before_tables, code, http=409):
        event(f"refused: {code}")
        assert status == http, answer
        assert answer["error"] == code, answer
        assert table_snapshot() == before_tables

    # --- portal money -----------------------------------------------------------------------------

    @rule(account=st.sampled_from(MANAGED), amount=AMOUNTS, data=st.data())
    def payment(self, account, amount, data):
        who = data.draw(st.sampled_from(ANCESTORS[account]), label="by")
        before, tables = money_of(account), table_snapshot()
        status, answer = self.send(who, "POST", f"/accounts/{account}/payments",
                                   {"amount": str(amount), "idempotency_key": key("sm")})
        if not self.active(who):
            return self.expect_refused(status, answer, tables, "caller_not_active", 403)
        assert status == 201, answer
        after = money_of(account)
        assert after["balance"] == before["balance"] + amount
        assert after["available"] == before["available"] + amount and after["held"] == before["held"]

    @rule(account=st.sampled_from(MANAGED), amount=AMOUNTS, data=st.data())
    def charge(self, account, amount, data):
        who = data.draw(st.sampled_from(ANCESTORS[account]), label="by")
        before, tables = money_of(account), table_snapshot()
        status, answer = self.send(who, "POST", f"/accounts/{account}/charges",
                                   {"amount": str(amount), "idempotency_key": key("sm")})
        if not self.active(who):
            return self.expect_refused(status, answer, tables, "caller_not_active", 403)
        if amount > before["available"]:
            return self.expect_refused(status, answer, tables, "insufficient_funds")
        assert status == 201, answer
        after = money_of(account)
        assert after["balance"] == before["balance"] - amount and after["held"] == before["held"]
        assert after["available"] == before["available"] - amount >= 0

    @rule(account=st.sampled_from(TRANSFERABLE), amount=AMOUNTS)
    def transfer(self, account, amount):
        payer = PARENT[account]
        before_payer, before_payee, tables = money_of(payer), money_of(account), table_snapshot()
        status, answer = self.send(payer, "POST", f"/accounts/{account}/transfers",
                                   {"amount": str(amount), "idempotency_key": key("sm")})
        if not self.active(payer):
            return self.expect_refused(status, answer, tables, "caller_not_active", 403)
        if amount > before_payer["available"]:
            return self.expect_refused(status, answer, tables, "insufficient_funds")
        assert status == 201, answer
        assert money_of(payer)["balance"] == before_payer["balance"] - amount
        assert money_of(account)["balance"] == before_payee["balance"] + amount
        assert money_of(payer)["available"] >= 0

    @rule(account=st.sampled_from(MANAGED), limit=LIMITS, data=st.data())
    def credit_limit(self, account, limit, data):
        who = data.draw(st.sampled_from(ANCESTORS[account]), label="by")
        before, tables = money_of(account), table_snapshot()
        postpaid = account_money()[account]["billing_type"] == "postpaid"
        status, answer = self.send(who, "PUT", f"/accounts/{account}/credit-limit",
                                   {"credit_limit": str(limit), "idempotency_key": key("sm")})
        if not self.active(who):
            return self.expect_refused(status, answer, tables, "caller_not_active", 403)
        delta = limit - before["credit_limit"] if postpaid else Decimal(0)
        if delta < 0 and before["available"] + delta < 0:
            assert status == 409, answer
            assert table_snapshot() == tables
            return
        assert status == 200, answer
        after = money_of(account)
        assert after["credit_limit"] == limit and after["available"] == before["available"] + delta
        assert after["balance"] == before["balance"]

    # --- status -----------------------------------------------------------------------------------

    @rule(account=st.sampled_from(MANAGED), action=st.sampled_from(("suspend", "resume")), data=st.data())
    def set_status(self, account, action, data):
        who = data.draw(st.sampled_from(ANCESTORS[account]), label="by")
        tables = table_snapshot()
        status, answer = self.send(who, "POST", f"/accounts/{account}/{action}")
        if not self.active(who):
            return self.expect_refused(status, answer, tables, "caller_not_active", 403)
        assert status == 200, answer
        self.status[account] = "suspended" if action == "suspend" else "active"
        assert answer["status"] == self.status[account] == stored(account).status
        if action == "suspend":
            self.portal.forget(account)           # suspending ends the account's sessions

    # --- the switch -------------------------------------------------------------------------------

    @initialize()
    def a_call_in_flight(self):
        """Every run starts with acme in a call (money held at every level of its chain)."""
        assert self._authorize("1001", "14155550100") is not None

    def _authorize(self, sip, number):
        """POST /authorize; the call id if granted. A refusal must write nothing."""
        call_id = f"sm-{next(_ids)}"
        tables = table_snapshot()
        answer = post_authorize(self.client, sip, number, call_id)
        body = body_of(answer)
        event(f"authorize: {body.get('reason', 'granted')}")
        if answer.status_code == 200:
            assert body["authorized"] is True and body["max_duration"] >= 0
            self.calls[call_id] = {"state": "held", "max": int(body["max_duration"])}
            chain = PATHS[SIP_USERS[sip]].split("/")
            assert all(self.active(a) for a in chain), "a call was granted under a suspended account"
            return call_id
        assert answer.status_code in (402, 403), answer.body
        assert body["authorized"] is False
        assert table_snapshot() == tables, "a refused call wrote something"
        return None

    def _complete(self, call_id, billsec):
        call = self.calls[call_id]
        event(f"completed a {call['state']} call")
        disposition = "ANSWERED" if billsec else "NO ANSWER"
        answer = post_complete(self.client, call_id, billsec, disposition)
        assert answer.status_code == 200, answer.body
        if call["state"] == "expired":                 # billed without a hold: may go below a floor
            from tests.integration.helpers import call_item
            self.unguarded |= {lvl.account_id for lvl in call_item(call_id).levels}
        call["state"] = "done"
        # a repeat gets the same answer and bills nothing more
        tables = table_snapshot()
        again = post_complete(self.client, call_id, billsec, disposition)
        assert again.status_code == 200 and body_of(again) == body_of(answer)
        assert table_snapshot() == tables

    @rule(sip=st.sampled_from(sorted(SIP_USERS)), number=st.sampled_from(NUMBERS))
    def authorize(self, sip, number):
        self._authorize(sip, number)

    @rule(sip=st.sampled_from(sorted(SIP_USERS)), number=st.sampled_from(NUMBERS), data=st.data())
    def short_call(self, sip, number, data):
        call_id = self._authorize(sip, number)
        if call_id is not None:
            self._complete(call_id, data.draw(st.integers(0, min(self.calls[call_id]["max"], 600)), label="billsec"))

    @precondition(lambda self: any(c["state"] != "done" for c in self.calls.values()))
    @rule(data=st.data())
    def complete(self, data):
        open_calls = sorted(c for c, v in self.calls.items() if v["state"] != "done")
        call_id = data.draw(st.sampled_from(open_calls), label="call")
        self._complete(call_id, data.draw(st.integers(0, self.calls[call_id]["max"]), label="billsec"))

    @precondition(lambda self: any(c["state"] == "held" for c in self.calls.values()))
    @rule(data=st.data())
    def completion_after_the_sweeper(self, data):
        """The completion of a call comes after the sweeper released its hold: billed late."""
        self.sweep()
        expired = sorted(c for c, v in self.calls.items() if v["state"] == "expired")
        call_id = data.draw(st.sampled_from(expired), label="call")
        self._complete(call_id, data.draw(st.integers(0, self.calls[call_id]["max"]), label="billsec"))

    @rule()
    def sweep(self):
        from chalicelib.bootstrap import container
        from chalicelib.services.sweep_holds import sweep_expired_holds
        held = [c for c, v in self.calls.items() if v["state"] == "held"]
        released = sweep_expired_holds(container().store, clock=lambda: time.time() + 10 ** 6)
        assert released == len(held)
        for c in held:
            self.calls[c]["state"] = "expired"

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def double_entry(self):
        assert_ledger_invariant(ALL)

    @invariant()
    def held_money_is_the_holds_of_calls_in_flight_and_nothing_guarded_is_below_zero(self):
        from chalicelib.adapters.dynamo.models import CallItem
        from chalicelib.adapters.dynamo.reads import to_call     # the same records the store reads
        held = {a: Decimal(0) for a in ALL}
        calls = {a: 0 for a in ALL}
        in_flight = set()
        for entry in CallItem.held_index.scan(consistent_read=False):    # sparse: calls still holding money
            item = CallItem.get(entry.pk, entry.sk)                       # the index holds keys only
            if item.status == "held":
                in_flight.add(item.call_id)
                for level in to_call(item).levels:
                    if level.charged:
                        held[level.account_id] += level.hold
                        calls[level.account_id] += 1
        assert in_flight == {c for c, v in self.calls.items() if v["state"] == "held"}
        accounts = account_money()
        for a in ALL:
            item = accounts[a]
            assert item["held"] == held[a] >= 0, (a, item["held"], held[a])
            assert item["active_calls"] == calls[a], (a, item["active_calls"], calls[a])
            assert item["status"] == self.status[a], (a, item["status"], self.status[a])
            if item["billing_type"] in ("prepaid", "postpaid") and a not in self.unguarded:
                assert item["available"] >= 0, (a, item)


PortalMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None, database=None,
                                           suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.filter_too_much])
TestPortalStateMachine = PortalMachine.TestCase
