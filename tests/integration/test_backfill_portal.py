"""scripts/backfill_portal.py: a stage upgraded from before the portal becomes visible to it, and its
balances are explained by the journal."""
from chalicelib.adapters.dynamo.models import AccountItem, CoreItem, IdentityItem, JournalItem, SwitchKeyItem
from tests.conftest import demo_seed, load
from tests.integration.helpers import ALL_DEMO, assert_ledger_invariant, client, post_authorize, post_complete  # noqa: F401


def strip_to_the_old_shape():
    """What a stage deployed before this release holds: no paths, no listing keys, no journal."""
    for item in CoreItem.scan():
        if isinstance(item, AccountItem):
            item.update(actions=[AccountItem.path.remove(), AccountItem.tree.remove(), AccountItem.list_pk.remove(),
                                 AccountItem.list_sk.remove(), AccountItem.search_text.remove(),
                                 AccountItem.may_create.remove()])
        elif isinstance(item, (IdentityItem, SwitchKeyItem)):
            item.update(actions=[CoreItem.list_pk.remove(), CoreItem.list_sk.remove()])
    for entry in JournalItem.scan():
        entry.delete()


def test_an_old_stage_is_backfilled_once_and_its_balances_balance(client):
    # GIVEN the demo tree with a finished call, stripped to the shape of a stage deployed before the portal
    from scripts.backfill_portal import backfill
    from chalicelib.bootstrap import container
    load(demo_seed())
    assert post_authorize(client, "1001", "15551230001", "before-1").status_code == 200
    assert post_complete(client, "before-1", 60, "ANSWERED").status_code == 200
    strip_to_the_old_shape()
    assert container().store.children("cumulus", 10, None)[0] == []
    # WHEN the backfill runs, twice
    first = backfill()
    second = backfill()
    # THEN the portal sees the tree, the switch keys are listed, and every balance is its ledger's sum
    assert first["accounts"] == len(ALL_DEMO) and second.get("opening entries", 0) == 0
    assert {a.id for a in container().store.children("cumulus", 10, None)[0]} == {"acme", "shortly"}
    assert container().store.account("acme").path == "admin/atlas/borealis/cumulus/acme"
    from chalicelib.adapters.dynamo import writer
    assert [k.key_id for k in writer.switch_keys()]
    assert_ledger_invariant(ALL_DEMO)
