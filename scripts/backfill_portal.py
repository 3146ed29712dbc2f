"""One-off upgrade of a stage deployed before the portal: gives existing items what the portal reads.

- accounts: materialised ``path`` and ``tree`` (the subtree index), the children listing keys,
  ``search_text``, and ``may_create`` where unset (resellers: clients and resellers, as the seed gives);
- SIP identities and switch keys: their listing keys;
- the journal: per account, one ``opening`` entry for the balance its calls do not explain (balance minus
  the postings of its finished calls, which are journal entries already), so that balance == the sum of
  its wallet postings holds from the first day. Its id comes from the account and the word "upgrade",
  so running the script again writes nothing twice.

    .venv/bin/python scripts/backfill_portal.py --stage prod        # AWS credentials in the environment
    .venv/bin/python scripts/backfill_portal.py --local

It reads the core table with Scan: an operator's one-off run with the operator's credentials (no
function's role may Scan). Run it once after the upgrade's deploys, while no portal user is active.
"""
import argparse
import pathlib
import sys
from collections import defaultdict
from decimal import Decimal

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scripts.targets import use_local, use_stage  # noqa: E402


def backfill() -> dict:
    from pynamodb.exceptions import PutError
    from chalicelib.adapters.dynamo.keys import SWITCH_KEYS_LIST, children_list
    from chalicelib.adapters.dynamo.models import AccountItem, CallItem, CoreItem, IdentityItem, JournalItem, SwitchKeyItem
    from chalicelib.adapters.dynamo.portal_store import SIP_USERS_LIST
    from chalicelib.adapters.dynamo.reads import to_call
    from chalicelib.adapters.dynamo.writes import journal_item, search_text
    from chalicelib.domain import ledger
    from chalicelib.domain.accounts import CLIENT, CREATE_NOTHING, CREATE_RESELLERS
    items = list(CoreItem.scan())
    accounts = {i.id: i for i in items if isinstance(i, AccountItem)}
    called = defaultdict(Decimal)      # wallet postings of finished calls, per account
    for item in items:
        if isinstance(item, CallItem):
            entry = to_call(item).journal_entry()
            for p in entry.postings if entry else ():
                if p.book.startswith("wallet:"):
                    called[p.book[len("wallet:"):]] += p.amount

    def path_of(account_id: str) -> str:
        parts, seen = [], set()
        while account_id is not None and account_id not in seen:
            seen.add(account_id)
            parts.append(account_id)
            account_id = accounts[account_id].parent_id if account_id in accounts else None
        return "/".join(reversed(parts))
    done = defaultdict(int)
    for a in accounts.values():
        path = path_of(a.id)
        actions = [AccountItem.path.set(path), AccountItem.tree.set(path.split("/")[0]),
                   AccountItem.search_text.set(search_text(a.name, a.email))]
        if a.parent_id:
            actions += [AccountItem.list_pk.set(children_list(a.parent_id)), AccountItem.list_sk.set(a.id)]
        if not a.may_create:
            actions.append(AccountItem.may_create.set(CREATE_NOTHING if a.role == CLIENT else CREATE_RESELLERS))
        a.update(actions=actions)
        done["accounts"] += 1
        opening = a.balance - called[a.id]
        if opening:
            entry = ledger.JournalEntry(id=ledger.entry_id(ledger.OPENING, f"upgrade:{a.id}"), kind=ledger.OPENING,
                                        subject=a.id, ref="upgrade", description="balance before the journal",
                                        postings=ledger.balanced([ledger.Posting(ledger.wallet(a.id), opening),
                                                                  ledger.Posting(ledger.WORLD, -opening)]))
            try:
                journal_item(entry, a.created_at or "2026-01-01T00:00:00.000Z").save(
                    condition=JournalItem.entry_id.does_not_exist())
                done["opening entries"] += 1
            except PutError:
                pass     # written by an earlier run
    for item in items:
        if isinstance(item, IdentityItem) and not item.list_pk:
            item.update(actions=[IdentityItem.list_pk.set(SIP_USERS_LIST + item.client_id), IdentityItem.list_sk.set(item.name)])
            done["identities"] += 1
        elif isinstance(item, SwitchKeyItem) and not item.list_pk:
            item.update(actions=[SwitchKeyItem.list_pk.set(SWITCH_KEYS_LIST),
                                 SwitchKeyItem.list_sk.set(f"{item.key_id}#{item.created_at}")])
            done["switch keys"] += 1
    return dict(done)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local", action="store_true")
    parser.add_argument("--stage")
    args = parser.parse_args(argv)
    if args.local:
        use_local()
    elif args.stage:
        use_stage(args.stage)
    print(backfill())


if __name__ == "__main__":
    main()
