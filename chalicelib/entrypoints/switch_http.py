"""The switch API, independent of how the request arrived (API Gateway via Chalice, or a Lambda
function URL): parse -> service -> map error types to HTTP codes. Contract: docs/switch-api.md."""
import json
import logging
from decimal import Decimal
from typing import Mapping, Optional, Tuple
from urllib.parse import unquote

from chalicelib.domain.settlement import DISPOSITIONS
from chalicelib.services.authorize_call import AuthorizeRequest, Unauthorized, authorize_call
from chalicelib.services.complete_call import UnknownCall, complete_call
from chalicelib.services.ports import StoreBusy
from chalicelib.adapters.secrets import load_key_pepper
from chalicelib.services.switch_keys import key_hash

log = logging.getLogger("cascade.switch")

_store = None
MAX_TEXT = 256
MAX_BILLSEC = 7 * 86400   # no real call lasts a week; larger values are input errors, not calls to bill


def store():
    """Created on first use, not at import: keeps cold starts and test set-up cheap."""
    global _store
    if _store is None:
        from chalicelib.adapters.dynamo.store import DynamoStore
        _store = DynamoStore()
    return _store


class BadRequest(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def _body(raw) -> dict:
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    try:
        data = json.loads(raw or "", parse_float=Decimal)
    except json.JSONDecodeError:
        raise BadRequest("body", "must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("body", "must be a JSON object")
    return data


def _text(data: dict, field: str, required: bool = True) -> Optional[str]:
    value = data.get(field)
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)   # switches often send digits as numbers
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(field, "is required and must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise BadRequest(field, f"must be at most {MAX_TEXT} characters")
    return value.strip()


def _api_key(headers: Mapping[str, str]) -> str:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    key = lowered.get("x-api-key")
    if not key:
        raise Unauthorized()
    load_key_pepper()
    return key_hash(key)


def authorize(headers: Mapping[str, str], raw_body) -> Tuple[int, dict]:
    def run():
        digest = _api_key(headers)
        data = _body(raw_body)
        request = AuthorizeRequest(account=_text(data, "account"), destination=_text(data, "destination"),
                                   call_id=_text(data, "call_id"), caller_id=_text(data, "caller_id", False))
        answer = authorize_call(store(), request, digest)
        return answer.status, answer.body
    return _guarded(run)


def complete(headers: Mapping[str, str], raw_call_id: str, raw_body) -> Tuple[int, dict]:
    def run():
        digest = _api_key(headers)
        call_id = unquote(raw_call_id or "")   # chalice local and some gateways leave %40 encoded
        if not call_id or len(call_id) > MAX_TEXT:
            raise BadRequest("call_id", "is required in the path")
        data = _body(raw_body)
        billsec = data.get("billsec")
        if isinstance(billsec, bool) or not isinstance(billsec, int) or not 0 <= billsec <= MAX_BILLSEC:
            raise BadRequest("billsec", f"must be a whole number of seconds from 0 to {MAX_BILLSEC}")
        disposition = data.get("disposition")
        if disposition not in DISPOSITIONS:
            raise BadRequest("disposition", f"must be one of {', '.join(DISPOSITIONS)}")
        return 200, complete_call(store(), call_id, billsec, disposition, digest)
    return _guarded(run)


def _guarded(run) -> Tuple[int, dict]:
    try:
        return run()
    except BadRequest as exc:
        return 400, {"error": "invalid_request", "field": exc.field, "message": f"{exc.field} {exc.message}"}
    except Unauthorized:
        return 401, {"error": "unauthorized", "message": "missing, unknown or revoked X-Api-Key"}
    except UnknownCall:
        return 404, {"error": "unknown_call", "message": "no call with this call_id was authorized"}
    except StoreBusy:
        log.exception("store busy")
        return 503, {"error": "busy", "message": "try again"}
    except Exception:   # fail closed with a JSON body, never a stack trace
        log.exception("switch request failed")
        return 500, {"error": "internal", "message": "internal error"}


def dumps(body: dict) -> str:
    return json.dumps(body, default=str)
