"""CDRs as the portal shows them (JSON) and writes them (CSV), for the API's answers and the background
export alike."""
from datetime import datetime, timezone
from decimal import Decimal

CDR_COLUMNS = ("billed_at", "call_id", "client_id", "direction", "destination", "prefix", "destination_name",
               "disposition", "billsec", "billed_seconds", "buy", "sell", "commission", "profit", "late")


def cdr_view(view) -> dict:
    """One call at the viewing account's level: what it paid (buy) and, above a client, what its child
    paid it (sell) and its profit. Nothing priced above the account."""
    return {"id": view.cdr_id.split("#", 1)[1], "call_id": view.call_id, "billed_at": view.cdr_id.split("#", 1)[0],
            "started_at": _iso(view.started_at), "client_id": view.client_id, "direction": view.direction,
            "destination": view.destination, "prefix": view.prefix, "destination_name": view.destination_name,
            "disposition": view.disposition, "billsec": view.billsec, "billed_seconds": view.billed_seconds,
            "buy": view.buy, "sell": view.sell, "commission": view.commission, "profit": view.profit,
            "late": bool(view.late), "over_max": view.over_max}


def _cell(value) -> str:
    """A CSV cell; text a switch or a person chose never starts a spreadsheet formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
        return True
    except ArithmeticError:
        return False


def csv_lines(rows_pages):
    import csv
    import io
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CDR_COLUMNS)
    yield buffer.getvalue()
    for _, rows in rows_pages:
        for view in rows:
            buffer.seek(0)
            buffer.truncate()
            row = cdr_view(view)
            writer.writerow([_cell(str(row[c]).lower() if isinstance(row[c], bool) else row[c]) for c in CDR_COLUMNS])
            yield buffer.getvalue()


def _iso(epoch) -> str:
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
