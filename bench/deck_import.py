"""`make bench`, part 3: a 100,000-row rate deck imported the way an operator sends one (a presigned S3
upload, then the background task), over in-process moto. Prints the import's time and peak memory, what a
second import of the same deck costs (nothing changes), and authorize's round trips on the imported
tariff; the last line is one JSON object.

Peak memory is Python's own allocations during the task (tracemalloc, in a second run so the timed run
is not slowed by it) and the process's resident peak (ru_maxrss, which includes moto's copy of the table).
"""
import json
import os
import pathlib
import random
import resource
import sys
import time
import tracemalloc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.update({
    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "CASCADE_TABLE_PREFIX": "bench-",
    "CASCADE_KEY_PEPPER": "bench-pepper", "CASCADE_IMPORTS_INLINE": "1", "CASCADE_SWITCH_CACHE_SECONDS": "0",
})
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("CASCADE_DECK_BUCKET", None)

import botocore.handlers  # noqa: E402

CALLS = []
botocore.handlers.BUILTIN_HANDLERS.append(("before-call.dynamodb", lambda model, **kw: CALLS.append(model.name)))

from moto import mock_aws  # noqa: E402
from scripts import moto_journal  # noqa: E402

moto_journal.install()   # moto deep-copies every table per transaction item otherwise (FACTS)

ROWS = int(os.environ.get("BENCH_DECK_ROWS", "100000"))
KEY = "csk_bench"


def deck(rows: int, seed: int = 11) -> bytes:
    """An A-Z-shaped deck: country codes with 2-7 digit extensions, names and increments."""
    rng = random.Random(seed)
    prefixes = {"1", "1555", "15551", "155512"}
    while len(prefixes) < rows:
        prefixes.add(str(rng.randint(2, 9)) + str(rng.randint(0, 9)) + str(rng.randint(0, 10 ** rng.randint(1, 6))))
    lines = ["prefix,name,price,connect_fee,initial,subsequent"]
    for p in sorted(prefixes):
        lines.append(f"{p},Destination {p[:3]},0.{rng.randint(150, 990):03d}{rng.randint(0, 999):03d},0,1,1")
    return ("\n".join(lines) + "\n").encode()


def seed() -> dict:
    return {"settings": {"max_depth": 5},
            "tariffs": [{"id": "t-admin", "owner": "admin",
                         "rates": [{"prefix": str(d), "price": "0.01"} for d in range(1, 10)]},
                        {"id": "t-reseller", "owner": "admin",
                         "rates": [{"prefix": str(d), "price": "0.05"} for d in range(1, 10)]},
                        {"id": "t-client", "owner": "reseller", "rates": [{"prefix": "1", "price": "0.9"}]}],
            "accounts": [{"id": "admin", "role": "admin", "tariff": "t-admin"},
                         {"id": "reseller", "role": "reseller", "parent": "admin", "tariff": "t-reseller",
                          "balance": "100000"},
                         {"id": "client", "role": "client", "parent": "reseller", "tariff": "t-client",
                          "balance": "1000", "sip_users": ["5000"]}],
            "switch_keys": [{"id": "bench", "key": KEY}]}


def run_import(portal, principal, tariff_id: str, body: bytes, traced: bool = False) -> tuple:
    import requests
    job, upload = portal.open_import(principal, "reseller", tariff_id, {"mode": "replace"})
    posted = requests.post(upload["url"], data=upload["fields"], files={"file": ("deck.csv", body, "text/csv")})
    assert posted.status_code in (200, 201, 204), posted.text
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    done = portal.start_import(principal, "reseller", tariff_id, job.id)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    if traced:
        tracemalloc.stop()
    assert done.status == "done", done.result
    return done, seconds, peak


def main():
    from chalicelib.adapters.dynamo.models import create_tables
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.adapters.dynamo.writer import write_seed
    from chalicelib.bootstrap import container
    from chalicelib.domain.access import Principal
    from chalicelib.services.authorize_call import AuthorizeRequest, Authorized, authorize_call
    from chalicelib.services.complete_call import complete_call
    from chalicelib.services.seed import parse_seed
    from chalicelib.services.switch_keys import key_hash
    from chalicelib.entrypoints.importer import importer_portal as make_portal
    body = deck(ROWS)
    with mock_aws():
        create_tables()
        write_seed(parse_seed(json.dumps(seed())))
        portal = make_portal()
        me = Principal("reseller", "reseller", "admin/reseller")
        # the client's tariff: what a reseller replaces with a new deck
        done, seconds, _ = run_import(portal, me, "t-client", body)
        result = done.result
        print(f"deck import, {ROWS:,} rows ({len(body) / 1e6:.1f} MB) through S3 and the background task: "
              f"{seconds:.1f} s ({ROWS / seconds:,.0f} rows/s) over in-process moto, {done.to_write} transactions; "
              f"added {result['added']:,}, ended {result['ended']}", flush=True)
        again, again_s, _ = run_import(portal, me, "t-client", body)
        print(f"the same deck again: {again_s:.1f} s, changed {again.result['changed']}, added "
              f"{again.result['added']}, unchanged {again.result['unchanged']:,}", flush=True)
        # Peak memory: the same task into a fresh tariff under tracemalloc, with the transactions' items
        # built and serialized but not sent (moto's own bookkeeping would be traced too, and slowly).
        from chalicelib.adapters.dynamo.tariff_store import TariffStore
        fresh = portal.create_tariff(me, "reseller", {"name": "traced"})
        real_commit = TariffStore._commit_rates
        TariffStore._commit_rates = lambda self, tariff_id, rev, regions: (
            [i.serialize() for puts, _ in regions for i in puts], rev + 1)[1]
        try:
            _, traced_s, peak = run_import(portal, me, fresh.id, body, traced=True)
        finally:
            TariffStore._commit_rates = real_commit
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak memory of the task: {peak / 1e6:.0f} MB of Python allocations (tracemalloc, writes built but "
              f"not sent, {traced_s:.1f} s traced); process resident peak {rss_mb:.0f} MB (moto's tables "
              f"included)", flush=True)
        store, digest = DynamoStore(), key_hash(KEY)
        authorize_call(store, AuthorizeRequest("5000", "15551230001", "warm"), digest)
        prefixes = [line.split(",")[0] for line in body.decode().split("\n")[1::max(1, ROWS // 20)] if line]
        trips, granted = [], 0
        for i, prefix in enumerate(prefixes):
            number = (prefix + "1234567890")[:max(11, len(prefix) + 2)]
            CALLS.clear()
            answer = authorize_call(store, AuthorizeRequest("5000", number, f"after-{i}"), digest)
            trips.append(len(CALLS))
            if isinstance(answer, Authorized):
                granted += 1
                complete_call(store, f"after-{i}", 0, "NO ANSWER", digest)     # its hold back
            else:
                print(f"  {number}: {answer}", flush=True)
        print(f"authorize on the imported tariff: {max(trips)} round trips at most over {len(trips)} destinations "
              f"({granted} granted)", flush=True)
        del container
    print(json.dumps({"deck_import_rows": ROWS, "deck_import_mb": round(len(body) / 1e6, 2),
                      "deck_import_seconds": round(seconds, 1), "deck_import_rows_per_s": round(ROWS / seconds),
                      "deck_import_transactions": done.to_write, "deck_reimport_seconds": round(again_s, 1),
                      "deck_import_peak_python_mb": round(peak / 1e6, 1), "deck_import_process_rss_mb": round(rss_mb),
                      "authorize_round_trips_after_import": max(trips)}))


if __name__ == "__main__":
    main()
