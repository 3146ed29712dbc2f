"""The core table's stream: which records are calls just billed, and, where no Lambda reads the stream
(``make run``, tests), a reader that polls it the way the event source mapping would.

Deployed, the event source mapping delivers only call items whose new image is ``done`` (a filter in
infra/); ``billed_calls`` checks again, and keeps only the transition into ``done`` (a later write to a
finished call is not a second bill)."""
from typing import Iterator, List, Optional, Tuple

from chalicelib.services.records import CallRecord

from .models import CallItem, CoreItem
from .reads import to_call


def billed_calls(records: List[dict]) -> List[Tuple[str, CallRecord, str]]:
    """(sequence number, call, billed at ISO) for each record that bills a call, in stream order."""
    out = []
    for record in records:
        change = record.get("dynamodb") or {}
        new, old = change.get("NewImage") or {}, change.get("OldImage") or {}
        if new.get("kind", {}).get("S") != "call" or new.get("status", {}).get("S") != "done":
            continue
        if old.get("status", {}).get("S") == "done":
            continue
        item = CoreItem.from_raw_data(new)
        if isinstance(item, CallItem) and item.cdr_at:
            out.append((change["SequenceNumber"], to_call(item), item.cdr_at.split("#", 1)[0]))
    return out


class StreamReader:
    """Polls every shard of the core table's stream from where it last stopped, oldest shard first, and
    hands back event-shaped batches (as Lambda's event source mapping would: per shard, in order)."""

    def __init__(self):
        import boto3
        from botocore.config import Config
        # botocore 1.44 sends Streams calls to <account>.streams-ddb.<region>, which moto 5.2.5 does not
        # serve; the regional endpoint is the same service.
        self._streams = boto3.client("dynamodbstreams", region_name=CoreItem.Meta.region,
                                     config=Config(account_id_endpoint_mode="disabled"))
        self._arn: Optional[str] = None
        self._iterators = {}
        self._closed = set()

    def _stream_arn(self) -> Optional[str]:
        if self._arn is None:
            import boto3
            table = boto3.client("dynamodb", region_name=CoreItem.Meta.region).describe_table(
                TableName=CoreItem.Meta.table_name)["Table"]
            self._arn = table.get("LatestStreamArn")
        return self._arn

    def batches(self, limit: int = 1000) -> Iterator[List[dict]]:
        arn = self._stream_arn()
        if arn is None:
            return
        shards = self._streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self._closed:
                continue
            iterator = self._iterators.get(shard_id)
            if iterator is None:
                iterator = self._streams.get_shard_iterator(StreamArn=arn, ShardId=shard_id,
                                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while iterator:
                page = self._streams.get_records(ShardIterator=iterator, Limit=limit)
                iterator = page.get("NextShardIterator")
                if not page["Records"]:
                    break
                yield page["Records"]
            if iterator:
                self._iterators[shard_id] = iterator
            else:
                self._closed.add(shard_id)
