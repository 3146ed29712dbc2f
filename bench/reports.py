"""`make bench`, part 4: the reports of a month of 1,000,000 calls, and what the report consumer costs.

A tree of 10 top resellers x 10 resellers x 100 clients (10,000 clients, four levels) makes calls spread over
a month, 5 % of them inbound to 100 DIDs.

1. The consumer: BENCH_REPORT_STREAM_CALLS calls (default 20,000) reach ``ReportStore.apply_calls`` as the
   stream delivers them (batches of 1,000, in order) over in-process moto: transactions and write units
   per call, a replayed batch (nothing applied twice), the peak Python memory of a batch.
2. The month: BENCH_REPORT_CALLS calls (default 1,000,000) become the rows the consumer would have left
   (its own arithmetic, domain.reports.contributions, a batch at a time; moto's transactions are too slow to
   push a million calls through them here), written to the table; likewise a month of 1 % of the calls.
   Then each level's monthly, sub-accounts and DID reports of both months: seconds, peak Python memory
   (tracemalloc) and DynamoDB items read. A report reads rows, never calls: neither figure grows with
   the month. The last line is JSON.
"""
import json
import os
import pathlib
import random
import resource
import sys
import time
import tracemalloc
from decimal import Decimal

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.update({
    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "CASCADE_TABLE_PREFIX": "benchrep-",
    "CASCADE_KEY_PEPPER": "bench-pepper", "CASCADE_SWITCH_CACHE_SECONDS": "0",
})
os.environ.pop("AWS_ENDPOINT_URL", None)

import botocore.handlers  # noqa: E402

READ = {"items": 0}


def _count_reads(parsed, model, **_):
    if model.name in ("Query", "GetItem", "BatchGetItem"):
        if model.name == "Query":
            READ["items"] += len(parsed.get("Items", []))
        elif model.name == "GetItem":
            READ["items"] += 1 if parsed.get("Item") else 0
        else:
            READ["items"] += sum(len(v) for v in parsed.get("Responses", {}).values())


botocore.handlers.BUILTIN_HANDLERS.append(("after-call.dynamodb", _count_reads))

from moto import mock_aws  # noqa: E402
from scripts import moto_journal  # noqa: E402

moto_journal.install()

CALLS = int(os.environ.get("BENCH_REPORT_CALLS", "1000000"))
STREAM_CALLS = int(os.environ.get("BENCH_REPORT_STREAM_CALLS", "20000"))
MONTH, SMALL_MONTH, STREAM_MONTH = "2026-11", "2026-10", "2026-09"
BATCH = 1000


def tree():
    tops = [f"top{i}" for i in range(10)]
    mids = {t: [f"{t}-r{j}" for j in range(10)] for t in tops}
    clients = [(t, m, f"{m}-c{k}") for t in tops for m in mids[t] for k in range(100)]
    return tops, mids, clients


def calls(clients, n, seed=7, month=MONTH):
    """n billed calls: (sequence number, BilledCall), billed at increasing times over the month."""
    from chalicelib.domain.reports import BilledCall, LevelCharge
    rng = random.Random(seed)
    dids = [f"1555020{i:04d}" for i in range(100)]
    owner = {did: clients[i * 97 % len(clients)] for i, did in enumerate(dids)}
    start = time.mktime(time.strptime(f"{month}-01", "%Y-%m-%d"))
    step = 29 * 86400 / max(n, 1)
    for i in range(n):
        inbound = rng.random() < 0.05
        did = rng.choice(dids) if inbound else None
        top, mid, client = owner[did] if inbound else rng.choice(clients)
        billsec = rng.choice((0, 0, 30, 60, 95, 180, 600))
        per_minute = (Decimal("0.012"), Decimal("0.008"), Decimal("0.006"), Decimal("0.004"))
        cost = [(p * billsec / 60).quantize(Decimal("0.000001")) for p in per_minute]
        at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start + i * step))
        yield f"{10 ** 20 + i}", BilledCall(
            call_id=f"c{i}", billed_at=at, billsec=billsec, answered=billsec > 0,
            levels=(LevelCharge(client, cost[0], Decimal(0)), LevelCharge(mid, cost[1], Decimal(0)),
                    LevelCharge(top, cost[2], Decimal(0)), LevelCharge("admin", cost[3], Decimal(0))), did=did)


def write_tree(tops, mids, clients):
    """Accounts the reports read (children lists, balances); DIDs held down to their clients."""
    import json as _json
    from chalicelib.adapters.dynamo.writer import write_seed
    from chalicelib.services.seed import parse_seed
    accounts = [{"id": "admin", "role": "admin"}]
    accounts += [{"id": t, "role": "reseller", "parent": "admin", "balance": "1000"} for t in tops]
    accounts += [{"id": m, "role": "reseller", "parent": t, "balance": "100"} for t in tops for m in mids[t]]
    accounts += [{"id": c, "role": "client", "parent": m, "balance": "10"} for _, m, c in clients]
    dids = [{"number": f"1555020{i:04d}", "country": "US",
             "holders": [{"account": a, "per_minute": p} for a, p in zip(clients[i * 97 % len(clients)],
                                                                      ("0.006", "0.008", "0.012"))]}
            for i in range(100)]
    write_seed(parse_seed(_json.dumps({"settings": {"max_depth": 5}, "tariffs": [], "accounts": accounts,
                                        "dids": dids})))


def reports(portal, principal_of, who, month):
    """Each report of ``who``'s month: seconds, peak MB (tracemalloc) and items read."""
    out = {}
    principal = principal_of(who)
    for name, run in (("monthly", lambda: portal.monthly(principal, who, month, 100, None)),
                      ("sub_accounts", lambda: portal.sub_accounts(principal, who, month, 100, None)),
                      ("dids", lambda: portal.did_report(principal, who, month, 100, None))):
        READ["items"] = 0
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
        reads = READ["items"]
        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[name] = {"s": round(seconds, 3), "peak_mb": round(peak / 1e6, 2), "items_read": reads}
    return out


def month_rows(clients, n, month, seed):
    """The rows a month of n calls leaves, by the consumer's own arithmetic (domain.reports), a batch of
    1,000 at a time as the stream delivers them; only the rows are held, never the calls."""
    from chalicelib.domain.reports import ROW_SHARDS, Totals, contributions
    rows = {}
    for i, (seq, call) in enumerate(calls(clients, n, seed=seed, month=month)):
        shard = (i // BATCH) % ROW_SHARDS
        for key, totals in contributions(call).items():
            rows.setdefault((key, shard), Totals()).add(totals)
    return rows


def write_rows(rows):
    from chalicelib.adapters.dynamo.keys import report_pk, row_sk
    from chalicelib.adapters.dynamo.models import ReportRowItem
    with ReportRowItem.batch_write() as batch:
        for ((account, month, row), shard), t in rows.items():
            batch.save(ReportRowItem(report_pk(account), row_sk(month, row, shard), calls=t.calls, answered=t.answered,
                                     seconds=t.seconds, revenue=t.revenue, cost=t.cost, commission=t.commission))


def main():
    from chalicelib.adapters.dynamo.models import create_tables
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.domain.access import Principal
    from chalicelib.services.portal import Portal

    with mock_aws():
        create_tables()
        tops, mids, clients = tree()
        write_tree(tops, mids, clients)
        store = DynamoStore()
        levels = ["admin", tops[0], mids[tops[0]][0], clients[0][2]]
        accounts = {a: store.account(a) for a in levels}

        def principal_of(who):
            a = accounts[who]
            return Principal(a.id, a.role, a.path)

        # 1. The consumer itself: STREAM_CALLS calls as the stream delivers them, then a replay.
        stats = {"records": 0, "runs": 0, "rows": 0, "skipped": 0}
        started = time.perf_counter()
        batch = []
        for record in calls(clients, STREAM_CALLS, seed=5, month=STREAM_MONTH):
            batch.append(record)
            if len(batch) == BATCH:
                for k, v in store.apply_calls(batch).items():
                    stats[k] += v
                batch = []
        if batch:
            for k, v in store.apply_calls(batch).items():
                stats[k] += v
        applied_s = time.perf_counter() - started
        replay = store.apply_calls(list(calls(clients, BATCH, seed=5, month=STREAM_MONTH)))
        tracemalloc.start()
        store.apply_calls([(f"{2 * 10 ** 20 + i}", c) for i, (_, c) in
                           enumerate(calls(clients, BATCH, seed=9, month=STREAM_MONTH))])
        batch_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        check = Portal(store, clock=time.time).monthly(principal_of("admin"), "admin", STREAM_MONTH, 100, None)

        # 2. The reports of a small month and of a CALLS-call month.
        started = time.perf_counter()
        tracemalloc.start()
        big = month_rows(clients, CALLS, MONTH, seed=7)
        generate_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        generate_s = time.perf_counter() - started
        small = month_rows(clients, CALLS // 100, SMALL_MONTH, seed=8)
        write_rows(big)
        write_rows(small)
        portal = Portal(store, clock=time.time)
        reports_small = {who: reports(portal, principal_of, who, SMALL_MONTH) for who in levels}
        reports_big = {who: reports(portal, principal_of, who, MONTH) for who in levels}
        admin = portal.monthly(principal_of("admin"), "admin", MONTH, 100, None)["totals"]

    # A transaction writes its mark and its rows, each under 1 KB: 2 write units each.
    wru_per_call = 2 * (stats["runs"] + stats["rows"]) / max(stats["records"], 1)
    print(f"consumer: {stats['records']:,} calls in {applied_s:.0f} s over in-process moto, {stats['runs']:,} "
          f"transactions, {stats['rows']:,} row writes: {wru_per_call:.2f} write units a call; a batch of "
          f"{BATCH:,} replayed: {replay['skipped']:,} skipped, {replay['runs']} written; peak Python memory of a "
          f"batch {batch_peak / 1e6:.1f} MB; the month's admin report counts {check['totals']['calls']:,} calls")
    print(f"a {CALLS:,}-call month: its rows ({len(big):,}) made in {generate_s:.0f} s with {generate_peak / 1e6:.1f} MB "
          f"at most (no call kept); admin's report counts {admin['calls']:,} calls")
    for who in levels:
        print(f"  {who:11s} {CALLS // 100:>9,} calls: {reports_small[who]}")
        print(f"  {'':11s} {CALLS:>9,} calls: {reports_big[who]}")
    print(json.dumps({
        "report_consumer_calls": stats["records"], "report_consumer_s": round(applied_s, 1),
        "report_transactions": stats["runs"], "report_row_writes": stats["rows"],
        "report_wru_per_call": round(wru_per_call, 2), "report_batch_peak_mb": round(batch_peak / 1e6, 1),
        "report_replayed_skipped": replay["skipped"], "report_month_calls": admin["calls"],
        "report_month_rows": len(big), "report_month_generate_s": round(generate_s, 1),
        "report_month_generate_peak_mb": round(generate_peak / 1e6, 1),
        "reports_small_month": reports_small, "reports_big_month": reports_big,
        "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
