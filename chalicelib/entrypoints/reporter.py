"""The report consumer: a Lambda on the core table's stream (infra/: only call items whose new image is
``done``, batches of up to 1,000, never bisected). Each batch's billed calls are added to the report
rows exactly once (services.reporting). Where there is no Lambda, ``drain`` reads the stream itself."""
import logging

from chalice import Blueprint

reporter_bp = Blueprint(__name__)
log = logging.getLogger("cascade.reporter")


def handle(records) -> dict:
    from chalicelib.adapters.dynamo.stream import billed_calls
    from chalicelib.bootstrap import container
    from chalicelib.services import reporting
    return reporting.apply(container().store, billed_calls(records))


@reporter_bp.lambda_function(name="reporter")
def reporter(event, context):
    stats = handle((event or {}).get("Records") or [])
    log.info("report batch", extra=stats)
    return stats


_reader = None


def drain(reset: bool = False) -> dict:
    """Read what the stream holds since the last drain and apply it (``make run``'s loop, tests)."""
    global _reader
    from chalicelib.adapters.dynamo.stream import StreamReader
    if reset or _reader is None:
        _reader = StreamReader()
    total = {"records": 0, "skipped": 0, "runs": 0, "rows": 0}
    for batch in _reader.batches():
        for name, value in handle(batch).items():
            total[name] = total.get(name, 0) + value
    return total
