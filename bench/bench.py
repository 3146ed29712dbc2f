"""`make bench`: DynamoDB round trips on the switch path, the authorize Lambda's import cost and
in-process throughput over moto. The last line printed is one JSON object.

Round trips are counted through botocore events registered before any session exists, so every
PynamoDB call is seen: `before-call` (logical calls) and `response-received` (HTTP attempts).
"""
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.update({
    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "CASCADE_TABLE_PREFIX": "bench-",
    "CASCADE_KEY_PEPPER": "bench-pepper",
})
os.environ.pop("AWS_ENDPOINT_URL", None)

import botocore.handlers  # noqa: E402

CALLS = []
botocore.handlers.BUILTIN_HANDLERS.append(
    ("before-call.dynamodb", lambda model, **kw: CALLS.append(model.name)))

from capacity import lambda_dollars_per_million_calls, dollars_per_million_calls, install as install_capacity_meter  # noqa: E402

METER = install_capacity_meter()   # WRU/RRU per call; its own size lookups are invisible to CALLS

from moto import mock_aws  # noqa: E402

KEY = "csk_bench"
BIG = 100_000


def big_rates(n: int, price: str):
    """n distinct prefixes shaped like an A-Z deck: country codes with 3-8 digit extensions."""
    rng = random.Random(7)
    prefixes = {"1", "1555", "15551", "155512"}
    while len(prefixes) < n:
        prefixes.add(str(rng.randint(2, 9)) + str(rng.randint(0, 10 ** rng.randint(2, 6))))
    return [{"prefix": p, "price": price, "initial": 1, "subsequent": 1} for p in sorted(prefixes)]


def chain_seed(resellers: int, tariff_size: int) -> dict:
    ids = ["admin"] + [f"r{i}" for i in range(resellers)] + ["client"]
    tariffs, accounts = [], []
    for depth, account_id in enumerate(ids):
        price = f"0.{10 + depth:02d}"   # cheaper towards the root, so no level sells at a loss
        if depth == 0:
            rates = big_rates(tariff_size, price) if tariff_size else [{"prefix": "1", "price": price}]
            tariffs.append({"id": "t-admin", "owner": "admin", "rates": rates})
            accounts.append({"id": "admin", "role": "admin", "tariff": "t-admin"})
            continue
        parent = ids[depth - 1]
        rates = big_rates(tariff_size, price) if tariff_size and account_id == "client" else [{"prefix": "1", "price": price}]
        tariffs.append({"id": f"t-{account_id}", "owner": parent, "rates": rates})
        role = "client" if account_id == "client" else "reseller"
        account = {"id": account_id, "role": role, "parent": parent, "tariff": f"t-{account_id}",
                   "balance": "100000"}
        if role == "client":
            account["sip_users"] = ["5000"]
        accounts.append(account)
    return {"settings": {"max_depth": max(resellers, 5)}, "tariffs": tariffs, "accounts": accounts,
            "switch_keys": [{"id": "bench", "key": KEY}]}


UNITS = {}   # shape -> (authorize Usage, complete Usage)


def metered(fn):
    CALLS.clear()
    METER.start()
    result = fn()
    usage = METER.stop()
    assert not usage.errors, usage.errors
    return result, list(CALLS), usage


def counted(fn):
    CALLS.clear()
    result = fn()
    return result, list(CALLS)


WARM_CALLS = {}


def measure_path(resellers: int, tariff_size: int):
    from chalicelib.adapters.dynamo.models import ALL_MODELS, create_tables
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.adapters.dynamo.writer import write_seed
    from chalicelib.services.authorize_call import AuthorizeRequest, Authorized, authorize_call
    from chalicelib.services.complete_call import complete_call
    from chalicelib.services.seed import parse_seed
    from chalicelib.services.switch_keys import key_hash
    for model in ALL_MODELS:
        if model.exists():
            model.delete_table()
    create_tables()
    write_seed(parse_seed(json.dumps(chain_seed(resellers, tariff_size))))
    store, digest = DynamoStore(), key_hash(KEY)
    from chalicelib.adapters.dynamo.cache import SWITCH_CACHE
    authorize_call(store, AuthorizeRequest("5000", "15551230001", "warm"), digest)   # connection set-up
    SWITCH_CACHE.clear()            # a cold Lambda: nothing cached
    answer, auth_calls, auth_units = metered(lambda: authorize_call(store, AuthorizeRequest("5000", "155512300", "bench-1"), digest))
    assert isinstance(answer, Authorized), answer
    _, complete_calls, complete_units = metered(lambda: complete_call(store, "bench-1", 61, "ANSWERED", digest))
    answer, warm_calls, _ = metered(lambda: authorize_call(store, AuthorizeRequest("5000", "155512300", "bench-2"), digest))
    assert isinstance(answer, Authorized), answer
    complete_call(store, "bench-2", 61, "ANSWERED", digest)
    UNITS[(resellers, tariff_size)] = (auth_units, complete_units)
    WARM_CALLS[(resellers, tariff_size)] = warm_calls
    return store, digest, auth_calls, complete_calls


STEADY_CALLS = 60


def measure_demo():
    """The demo chain (demo/seed.json: acme -> cumulus -> borealis -> atlas -> admin), as the issues quote it.

    Two figures: a client's first call (no escrow yet: every level on its own item), and the steady state:
    after the rebalancer has filled acme's slots, STEADY_CALLS calls of 61 s, one every 100 s (a clock of
    their own: acme's CPS share is one call a second), with every rebalance they cause metered too and
    spread over them (the rebalancer's fixed cost of polling, 8 empty Queries a
    second whatever the traffic, is not per call: docs/deploy.md)."""
    from chalicelib.adapters.dynamo.models import ALL_MODELS, AccountItem, create_tables
    from chalicelib.adapters.dynamo.store import DynamoStore
    from chalicelib.adapters.dynamo.writer import write_seed
    from chalicelib.services.authorize_call import AuthorizeRequest, Authorized, authorize_call
    from chalicelib.services.complete_call import complete_call
    from chalicelib.services.rebalance import rebalance
    from chalicelib.services.seed import parse_seed
    from chalicelib.services.switch_keys import key_hash
    for model in ALL_MODELS:
        if model.exists():
            model.delete_table()
    create_tables()
    seed = json.loads((ROOT / "demo" / "seed.json").read_text())
    write_seed(parse_seed(json.dumps(seed)))
    store, digest = DynamoStore(), key_hash(seed["switch_keys"][0]["key"])
    authorize_call(store, AuthorizeRequest("1002", "12125550123", "warm"), digest)     # connection set-up
    complete_call(store, "warm", 5, "ANSWERED", digest)
    t0 = int(time.time()) + 10

    def at(t):
        return lambda: t
    answer, _, first_a = metered(lambda: authorize_call(store, AuthorizeRequest("1001", "12125550123", "demo-0"),
                                                        digest, at(t0)))
    assert isinstance(answer, Authorized), answer
    _, _, first_c = metered(lambda: complete_call(store, "demo-0", 61, "ANSWERED", digest, at(t0 + 61)))
    _, _, first_r = metered(lambda: rebalance(store, t0 + 61))
    first = (first_a, first_c, first_r)
    steady = {"wru": 0.0, "rru": 0.0, "authorize_wru": 0.0, "complete_wru": 0.0, "rebalance_wru": 0.0,
              "authorize_rru": 0.0, "complete_rru": 0.0, "rebalance_rru": 0.0, "index_wru": 0.0}
    # A warm Lambda serving this client: its route, key and tariffs stay cached for the whole loop (on a
    # busy host the real clock would otherwise expire them mid-loop; a cold identity costs 1 RRU more).
    cache_seconds = os.environ.get("CASCADE_SWITCH_CACHE_SECONDS")
    os.environ["CASCADE_SWITCH_CACHE_SECONDS"] = "86400"
    for i in range(STEADY_CALLS):
        t = t0 + 100 * (i + 1)
        answer, _, a = metered(lambda: authorize_call(store, AuthorizeRequest("1001", "12125550123", f"demo-{i + 1}"),
                                                      digest, at(t)))
        assert isinstance(answer, Authorized), answer
        _, _, c = metered(lambda: complete_call(store, f"demo-{i + 1}", 61, "ANSWERED", digest, at(t + 61)))
        parts = [("authorize", a), ("complete", c)]
        if AccountItem.get("ACC#acme", "#").want:
            _, _, r = metered(lambda: rebalance(store, t + 61))
            parts.append(("rebalance", r))
        for name, u in parts:
            steady[f"{name}_wru"] += u.wru / STEADY_CALLS
            steady[f"{name}_rru"] += u.rru / STEADY_CALLS
            steady["wru"] += u.wru / STEADY_CALLS
            steady["rru"] += u.rru / STEADY_CALLS
            steady["index_wru"] += u.index_wru / STEADY_CALLS
    if cache_seconds is None:
        os.environ.pop("CASCADE_SWITCH_CACHE_SECONDS")
    else:
        os.environ["CASCADE_SWITCH_CACHE_SECONDS"] = cache_seconds
    return first, steady


def units_line(a, c) -> str:
    return (f"authorize {a.wru:g} WRU {a.rru:g} RRU, complete {c.wru:g} WRU {c.rru:g} RRU = {a.wru + c.wru:g} WRU "
            f"{a.rru + c.rru:g} RRU per call (index writes {a.index_wru + c.index_wru:g} WRU of them); "
            f"${dollars_per_million_calls(a.wru + c.wru, a.rru + c.rru):.2f} per million calls in request units")


def import_medians(modules, runs: int = 5) -> dict:
    """Median import time of each module list in a fresh interpreter, the runs interleaved so that
    machine noise falls on every candidate alike."""
    samples = {m: [] for m in modules}
    for _ in range(runs):
        for module in modules:
            code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
            samples[module].append(float(subprocess.check_output([sys.executable, "-c", code], cwd=ROOT, text=True)))
    return {m: statistics.median(v) for m, v in samples.items()}


def main():
    report = {}
    with mock_aws():
        shapes = {"depth4": (2, 0), "depth4_100k": (2, BIG), "depth8": (6, 0), "depth8_100k": (6, BIG)}
        # depthN = accounts from client to root: depth4 = client, 2 resellers, admin
        for name, (resellers, size) in shapes.items():
            started = time.perf_counter()
            store, digest, auth, comp = measure_path(resellers, size)
            print(f"{name:12s} authorize {len(auth)} calls {auth}  complete {len(comp)} calls {comp}"
                  f"  ({time.perf_counter() - started:.1f}s incl. seeding)", flush=True)
            warm = WARM_CALLS[(resellers, size)]
            print(f"{'':12s} warm authorize (route, key and tariffs cached) {len(warm)} calls {warm}", flush=True)
            report[name] = {"authorize": len(auth), "complete": len(comp), "warm": len(warm)}
            a, c = UNITS[(resellers, size)]
            print(f"{'':12s} {units_line(a, c)}", flush=True)
            report[name].update(wru=a.wru + c.wru, rru=a.rru + c.rru)
            if name == "depth4":
                from chalicelib.services.authorize_call import AuthorizeRequest, Authorized, authorize_call
                from chalicelib.services.complete_call import complete_call
                n = 300
                started = time.perf_counter()
                for i in range(n):
                    assert isinstance(authorize_call(store, AuthorizeRequest("5000", "15551230001", f"t-{i}"), digest), Authorized)
                auth_rate = n / (time.perf_counter() - started)
                started = time.perf_counter()
                for i in range(n):
                    complete_call(store, f"t-{i}", 30, "ANSWERED", digest)
                complete_rate = n / (time.perf_counter() - started)
                print(f"throughput over in-process moto: {auth_rate:.0f} authorizations/s, "
                      f"{complete_rate:.0f} completions/s ({n} calls each)", flush=True)
        (demo_a, demo_c, demo_r), steady = measure_demo()
        print(f"demo chain, a client's first call (no escrow yet): {units_line(demo_a, demo_c)}; "
              f"the rebalance it asks for {demo_r.wru:g} WRU {demo_r.rru:g} RRU", flush=True)
        cold_lambda = lambda_dollars_per_million_calls()
        steady_dollars = dollars_per_million_calls(steady["wru"], steady["rru"])
        print(f"demo chain, steady state (escrow filled, {STEADY_CALLS} calls, rebalances included): "
              f"authorize {steady['authorize_wru']:.1f} WRU {steady['authorize_rru']:.1f} RRU, complete "
              f"{steady['complete_wru']:.1f} WRU {steady['complete_rru']:.1f} RRU, rebalancer "
              f"{steady['rebalance_wru']:.2f} WRU {steady['rebalance_rru']:.2f} RRU = {steady['wru']:.2f} WRU "
              f"{steady['rru']:.2f} RRU per call (index writes {steady['index_wru']:.1f}); "
              f"${steady_dollars:.2f} in request units + ${cold_lambda:.2f} Lambda (estimated durations, "
              f"bench/capacity.py) = ${steady_dollars + cold_lambda:.2f} per million calls", flush=True)
    # The switch module defers the DynamoDB adapter (PynamoDB, botocore) to the first request; a cold
    # start pays it there, so that figure is reported too.
    switch, with_store = "chalicelib.entrypoints.switch", "chalicelib.entrypoints.switch, chalicelib.adapters.dynamo.store"
    medians = import_medians(["boto3", switch, with_store])
    boto3_ms, authorize_ms, with_store_ms = medians["boto3"], medians[switch], medians[with_store]
    print(f"import: boto3 {boto3_ms:.0f} ms, authorize Lambda module {authorize_ms:.0f} ms, "
          f"with its DynamoDB adapter {with_store_ms:.0f} ms (median of 5)")
    print(json.dumps({
        "authorize_round_trips": report["depth4"]["authorize"],
        "complete_round_trips": report["depth4"]["complete"],
        "authorize_round_trips_depth8_100k_prefixes": report["depth8_100k"]["authorize"],
        "complete_round_trips_depth8_100k_prefixes": report["depth8_100k"]["complete"],
        "authorize_round_trips_by_shape": {k: v["authorize"] for k, v in report.items()},
        "warm_authorize_round_trips_by_shape": {k: v["warm"] for k, v in report.items()},
        "complete_round_trips_by_shape": {k: v["complete"] for k, v in report.items()},
        "authorize_import_ratio": round(authorize_ms / boto3_ms, 3),
        "authorize_import_with_store_ratio": round(with_store_ms / boto3_ms, 3),
        "authorize_import_ms": round(authorize_ms, 1), "boto3_import_ms": round(boto3_ms, 1),
        "demo_chain_first_call_wru": demo_a.wru + demo_c.wru, "demo_chain_first_call_rru": demo_a.rru + demo_c.rru,
        "demo_chain_wru_per_call": round(steady["wru"], 2), "demo_chain_rru_per_call": round(steady["rru"], 2),
        "demo_chain_request_dollars_per_million_calls": round(steady_dollars, 2),
        "demo_chain_lambda_dollars_per_million_calls": round(cold_lambda, 2),
        "demo_chain_dollars_per_million_calls": round(steady_dollars + cold_lambda, 2),
        "units_per_call_by_shape": {k: {"wru": v["wru"], "rru": v["rru"]} for k, v in report.items()},
        "authorizations_per_s": round(auth_rate, 1), "completions_per_s": round(complete_rate, 1),
    }))


if __name__ == "__main__":
    main()
