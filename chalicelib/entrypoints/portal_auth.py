"""The portal's sign-in API (a Chalice blueprint): parse -> identity service -> map error types to HTTP.

Bodies are JSON objects of at most 16 KB with known fields only; every error is
``{"error": code, "field": name (when one is at fault), "message": text}``, never a stack trace.
Codes: 400 invalid_request / weak_password, 401 invalid_credentials / invalid_token, 403 forbidden,
409 email_taken / login_exists, 413 invalid_request (body too large), 429 locked / too_many_attempts
(with Retry-After), 500 internal.

Metrics (CloudWatch EMF, namespace Cascade): SignIns, SignInFailures (wrong e-mail or password),
LockOuts (sign-ins refused because the login is locked or the IP is over its limit) and
PasswordResets (completed resets). Each is emitted on its own with ``single_metric`` as the event
happens: Chalice routes cannot be wrapped by ``@metrics.log_metrics``, and a shared ``Metrics`` set
could be flushed by another blueprint under its namespace.
"""
import json
import logging
from decimal import Decimal
from typing import Callable, Optional, Tuple

from chalice import Blueprint, Response

from chalicelib.domain.identity import (IdentityError, InvalidCredentials, InvalidRequest, Locked, NotAuthenticated,
                                        TooManyAttempts)

from . import metrics
from .portal_guard import identity_service, principal_of, source_ip

log = logging.getLogger("cascade.portal.auth")
auth_bp = Blueprint(__name__)

MAX_BODY_BYTES = 16 * 1024
STATUS = {"invalid_request": 400, "weak_password": 400, "invalid_credentials": 401, "invalid_token": 401,
          "forbidden": 403, "email_taken": 409, "login_exists": 409, "locked": 429, "too_many_attempts": 429}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# --- routes -----------------------------------------------------------------------------------------

@auth_bp.route("/auth/sign-in", methods=["POST"], content_types=["application/json"])
def sign_in():
    def run(body):
        try:
            session = identity_service().sign_in(body["email"], body["password"], source_ip(auth_bp.current_request))
        except InvalidCredentials:
            _count("SignInFailures")
            raise
        except (Locked, TooManyAttempts):
            _count("LockOuts")
            raise
        _count("SignIns")
        return _session(session)
    return _handle(run, required=("email", "password"))


@auth_bp.route("/auth/refresh", methods=["POST"], content_types=["application/json"])
def refresh():
    return _handle(lambda body: _session(identity_service().refresh(body["refresh_token"])),
                   required=("refresh_token",))


@auth_bp.route("/auth/sign-out", methods=["POST"], content_types=["application/json"])
def sign_out():
    def run(body):
        identity_service().sign_out(body["refresh_token"])
        return Response(body="", status_code=204, headers=NO_STORE)
    return _handle(run, required=("refresh_token",))


@auth_bp.route("/auth/password-reset", methods=["POST"], content_types=["application/json"])
def password_reset():
    def run(body):
        identity_service().request_reset(body["email"], source_ip(auth_bp.current_request))
        return _json(202, {"status": "accepted",
                           "message": "if this address signs in to Cascade, a reset link is on its way"})
    return _handle(run, required=("email",))


@auth_bp.route("/auth/password-reset/confirm", methods=["POST"], content_types=["application/json"])
def password_reset_confirm():
    def run(body):
        identity_service().confirm_reset(body["token"], body["password"])
        _count("PasswordResets")
        return Response(body="", status_code=204, headers=NO_STORE)
    return _handle(run, required=("token", "password"))


@auth_bp.route("/auth/password", methods=["POST"], content_types=["application/json"])
def change_password():
    def run(body):
        request = auth_bp.current_request
        principal = principal_of(request)
        return _session(identity_service().change_password(principal, body["old_password"], body["new_password"],
                                                           source_ip(request)))
    return _handle(run, required=("old_password", "new_password"))


@auth_bp.route("/auth/me", methods=["GET"])
def me():
    def run(_):
        p = principal_of(auth_bp.current_request)
        # the path as every account view shows it: from the caller down, never the ids above it
        return _json(200, {"account_id": p.account_id, "role": p.role, "path": p.account_id, "via": p.via})
    return _handle(run, required=None)


# --- plumbing ---------------------------------------------------------------------------------------

class BadBody(Exception):
    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


def _handle(run: Callable[[Optional[dict]], Response], required: Optional[Tuple[str, ...]]) -> Response:
    try:
        body = None if required is None else parse_body(auth_bp.current_request.raw_body, required)
        return run(body)
    except BadBody as exc:
        return _error(exc.status, "invalid_request", exc.message, exc.field)
    except IdentityError as exc:
        headers = {}
        if hasattr(exc, "retry_after"):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, NotAuthenticated):
            headers["WWW-Authenticate"] = 'Bearer realm="cascade-portal"'
        extra = {"retry_after": exc.retry_after} if hasattr(exc, "retry_after") else {}
        return _error(STATUS.get(exc.code, 400), exc.code, exc.message,
                      exc.field if isinstance(exc, InvalidRequest) else None, headers, extra)
    except Exception:     # fail closed with a JSON body, never a stack trace or a table name
        log.exception("portal auth request failed")
        return _error(500, "internal", "internal error")


def parse_body(raw, fields: Tuple[str, ...]) -> dict:
    """A JSON object holding exactly ``fields``, each a string (numbers parse as Decimal, never float)."""
    raw = raw or b""
    if len(raw) > MAX_BODY_BYTES:
        raise BadBody("body", f"body must be at most {MAX_BODY_BYTES} bytes", 413)

    def pairs(items):
        data = {}
        for key, value in items:
            if key in data:
                raise BadBody(_name(key), f"{_name(key)} appears twice")
            data[key] = value
        return data
    try:
        data = json.loads(bytes(raw).decode("utf-8"), parse_float=Decimal, object_pairs_hook=pairs,
                          parse_constant=_not_json)
    except RecursionError:
        raise BadBody("body", "body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise BadBody("body", "body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadBody("body", "body must be a JSON object")
    for key in data:
        if key not in fields:
            raise BadBody(_name(key), f"{_name(key)} is not a known field")
    for name in fields:
        if not isinstance(data.get(name), str) or not data[name]:
            raise BadBody(name, f"{name} is required and must be a non-empty string")
    return data


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _name(key: str) -> str:
    return key[:64].encode("utf-8", "replace").decode("utf-8")


def _session(session) -> Response:
    return _json(200, {"access_token": session.access_token, "refresh_token": session.refresh_token,
                       "token_type": "Bearer", "expires_in": session.expires_in,
                       "account": {"id": session.account_id, "role": session.role}}, NO_STORE)


def _json(status: int, body: dict, headers: Optional[dict] = None) -> Response:
    return Response(body=json.dumps(body), status_code=status,
                    headers={"Content-Type": "application/json", **(headers or {})})


def _error(status: int, code: str, message: str, field: Optional[str] = None, headers: Optional[dict] = None,
           extra: Optional[dict] = None) -> Response:
    body = {"error": code, **({"field": field} if field else {}), "message": message, **(extra or {})}
    return _json(status, body, headers)


def _count(name: str) -> None:
    """One EMF line per event; metrics must never break a sign-in."""
    try:
        metrics.count(name, service="portal")
    except Exception:   # pragma: no cover
        log.warning("metric %s not emitted", name, exc_info=True)
