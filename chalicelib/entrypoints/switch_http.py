"""The switch API, independent of how the request arrived (API Gateway via Chalice, or a Lambda
function URL): parse -> service -> map error types to HTTP codes. Contract: docs/switch-api.md."""
import json
import logging
from typing import Mapping, Tuple
from urllib.parse import unquote

from chalicelib.domain.settlement import DISPOSITIONS
from chalicelib.domain.authorization import INSUFFICIENT_FUNDS
from chalicelib.domain.dids import INBOUND, OUTBOUND
from chalicelib.services.authorize_call import (AuthorizeRequest, Authorized, CallIdInUse, Denied, Unauthorized,
                                                authorize_call)
from chalicelib.services.complete_call import CompletionConflict, UnknownCall, complete_call
from chalicelib.services.ports import StoreBusy
from chalicelib.adapters.secrets import load_key_pepper
from chalicelib.services.switch_keys import key_hash

from . import metrics
from .switch_input import BadRequest, api_key, clean_text, parse_body, whole_seconds

log = logging.getLogger("cascade.switch")

MAX_BILLSEC = 7 * 86400   # no real call lasts a week; larger values are input errors, not calls to bill


def store():
    """The composition root's store, created on first use, not at import (cold starts, test set-up)."""
    from chalicelib.bootstrap import container
    return container().store


def authorize_response(result) -> Tuple[int, dict]:
    """A grant is 200; a refusal 402 for money, 403 for anything else (docs/switch-api.md)."""
    if result.retries:
        metrics.count("HoldRetries", result.retries)
    if isinstance(result, Authorized):
        metrics.count("Grants")
        return 200, result.answer
    metrics.count("Denials", reason=result.reason)
    assert isinstance(result, Denied)
    return (402 if result.reason == INSUFFICIENT_FUNDS else 403), {"authorized": False, "reason": result.reason}


def _key_digest(headers: Mapping[str, str]) -> str:
    key = api_key(headers)
    if key is None:
        raise Unauthorized()
    load_key_pepper()
    return key_hash(key)


def authorize(headers: Mapping[str, str], raw_body) -> Tuple[int, dict]:
    def run():
        digest = _key_digest(headers)
        data = parse_body(raw_body)
        direction = data.get("direction", OUTBOUND)
        if direction not in (OUTBOUND, INBOUND):
            raise BadRequest("direction", f"must be {OUTBOUND} (the default) or {INBOUND}")
        request = AuthorizeRequest(account=clean_text("account", data.get("account"), required=direction == OUTBOUND),
                                   destination=clean_text("destination", data.get("destination")),
                                   call_id=clean_text("call_id", data.get("call_id")),
                                   caller_id=clean_text("caller_id", data.get("caller_id"), required=False),
                                   direction=direction)
        return authorize_response(authorize_call(store(), request, digest))
    return _guarded(run)


def complete(headers: Mapping[str, str], raw_call_id, raw_body) -> Tuple[int, dict]:
    """``raw_call_id`` is the path segment as sent, percent-encoded (REST API, function URL and
    chalice local all pass it undecoded); it is decoded once here and then cleaned like authorize's."""
    def run():
        digest = _key_digest(headers)
        call_id = clean_text("call_id", unquote(raw_call_id) if isinstance(raw_call_id, str) else None)
        data = parse_body(raw_body)
        billsec = whole_seconds("billsec", data.get("billsec"), MAX_BILLSEC)
        disposition = data.get("disposition")
        if not isinstance(disposition, str) or disposition not in DISPOSITIONS:
            raise BadRequest("disposition", f"must be one of {', '.join(DISPOSITIONS)}")
        return 200, complete_call(store(), call_id, billsec, disposition, digest)
    return _guarded(run)


def _guarded(run) -> Tuple[int, dict]:
    try:
        return run()
    except BadRequest as exc:
        return exc.status, {"error": "invalid_request", "field": exc.field, "message": f"{exc.field} {exc.message}"}
    except Unauthorized:
        return 401, {"error": "unauthorized", "message": "missing, unknown or revoked X-Api-Key"}
    except CallIdInUse as exc:
        return 409, {"authorized": False, "reason": exc.reason}
    except UnknownCall:
        return 404, {"error": "unknown_call", "message": "no call with this call_id was authorized"}
    except CompletionConflict as exc:
        return 409, {"error": "completion_conflict",
                     "message": "this call was already billed with another billsec or disposition",
                     "applied": exc.applied}
    except StoreBusy:
        log.exception("store busy")
        return 503, {"error": "busy", "message": "try again"}
    except Exception:   # fail closed with a JSON body, never a stack trace
        log.exception("switch request failed")
        return 500, {"error": "internal", "message": "internal error"}


def dumps(body: dict) -> str:
    return json.dumps(body, default=str)
