"""Start `make run`'s local stack (scripts/local_stack.py) as a child process, as a user would."""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
from typing import List, Optional

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalStack:
    def __init__(self, seed: Optional[pathlib.Path] = None, table_prefix: str = "cascade-local-",
                 escrow: bool = True):
        self.api_port, self.moto_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.dynamodb_endpoint = f"http://127.0.0.1:{self.moto_port}"
        self.table_prefix = table_prefix
        self.lines: List[str] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CASCADE_"))}
        env.update(PORT=str(self.api_port), MOTO_PORT=str(self.moto_port), PYTHONUNBUFFERED="1",
                   CASCADE_TABLE_PREFIX=table_prefix)
        if seed:
            env["SEED"] = str(seed)
        if not escrow:
            env["CASCADE_REBALANCE_TICK"] = "0"      # no rebalancer: every level held on its own item
        self.proc = subprocess.Popen([sys.executable, "scripts/local_stack.py"], cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)
                if line.strip() == "READY":
                    ready.set()
        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(90):
            self.stop()
            raise RuntimeError("local stack did not start:\n" + "".join(self.lines[-40:]))

    def table(self, logical: str):
        """A boto3 Table on the stack's own DynamoDB (numbers come back as Decimal)."""
        import boto3
        resource = boto3.resource("dynamodb", endpoint_url=self.dynamodb_endpoint, region_name="us-east-1",
                                  aws_access_key_id="local", aws_secret_access_key="local")
        return resource.Table(self.table_prefix + logical)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def scan(self, logical: str) -> list:
        table, items, start = self.table(logical), [], {}
        while True:
            page = table.scan(ConsistentRead=True, **start)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                return items
            start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}

    def wallet_sums(self) -> dict:
        """Every book's sum of postings, from one scan of each table: its journal items plus every
        finished call's postings (a call's journal entry is its record; domain.ledger.call_postings)."""
        import json
        from decimal import Decimal
        from boto3.dynamodb.types import TypeSerializer
        from chalicelib.adapters.dynamo.models import CallItem
        from chalicelib.adapters.dynamo.reads import to_call
        from chalicelib.domain.ledger import call_postings
        from chalicelib.domain.settlement import charges_from_result
        totals, serializer = {}, TypeSerializer()
        for item in self.scan("journal"):
            for book, amount in json.loads(item["postings"]).items():
                totals[book] = totals.get(book, Decimal(0)) + Decimal(amount)
        for item in self.scan("core"):
            if item.get("kind") == "call" and item.get("status") == "done":
                call = to_call(CallItem.from_raw_data({k: serializer.serialize(v) for k, v in item.items()}))
                for p in call_postings(charges_from_result(call.result["levels"])):
                    totals[p.book] = totals.get(p.book, Decimal(0)) + p.amount
        return totals

    def wallet_sum(self, account_id: str):
        """The sum of the postings to an account's wallet."""
        from decimal import Decimal
        from chalicelib.domain.ledger import wallet
        return self.wallet_sums().get(wallet(account_id), Decimal(0))
