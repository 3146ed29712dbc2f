"""The portal API (a Chalice blueprint): accounts in a walled tree and the money between them.

Every route is declared with ``@portal_route``, the one place that authenticates the caller, parses and
validates the body and query (JSON Schema, compiled with fastjsonschema; money exact to Decimal), calls
the service and maps error TYPES to HTTP. The same declarations produce ``/openapi.json``, so the
document cannot drift from the routes. Contract and walk-through: docs/portal-api.md.
"""
import json
import logging
from decimal import Decimal
from typing import Callable, Dict, List, Optional

from chalice import Blueprint, Response

from chalicelib.domain.access import Principal
from chalicelib.domain.accounts import (BILLING_MODES, BILLING_TYPES, CLIENT, CREATE_RIGHTS, RESELLER,
                                        RESELLER_MODELS, STATUSES, Account)
from chalicelib.domain.identity import IdentityError, InvalidRequest, NotAuthenticated
from chalicelib.domain.ledger import ENTRY_KINDS, InvalidAmount
from chalicelib.domain.money import NotMoney, money
from chalicelib.domain.rate_deck import DeckInvalid
from chalicelib.domain.tariffs import GroupTooLarge
from chalicelib.services.ports import AlreadyExists, BadCursor, StoreBusy
from chalicelib.services.portal import (Conflict, Forbidden, InvalidInput, NoSuchDid, NoSuchExport, NoSuchImport,
                                       NoSuchTariff, NotFound, Portal)

from . import metrics
from .cdr_csv import cdr_view, csv_lines
from .portal_guard import principal_of

log = logging.getLogger("cascade.portal")
portal_bp = Blueprint(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_DECK_BYTES = 5 * 1024 * 1024   # a deck sent in the request (Lambda takes 6 MB); larger ones go through S3
MAX_CSV_ANSWER = 5 * 1024 * 1024   # a larger CSV answer is written to S3 and answered 303 with a presigned URL
ROUTES: List[dict] = []          # what /openapi.json is built from
NOT_FOUND = {"error": "not_found", "message": "no such account"}
NO_TARIFF = {"error": "not_found", "message": "no such tariff"}
NO_IMPORT = {"error": "not_found", "message": "no such import"}
NO_DID = {"error": "not_found", "message": "no such DID"}
NO_EXPORT = {"error": "not_found", "message": "no such export"}
IDENTITY_STATUS = {"invalid_request": 400, "weak_password": 400, "invalid_token": 401, "forbidden": 403,
                   "email_taken": 409, "login_exists": 409}

# --- schemas (JSON Schema; "x-money" marks an amount parsed exactly to Decimal) -------------------

MONEY = {"type": ["string", "number"], "x-money": True, "description": "an amount, e.g. \"12.50\""}
TEXT = lambda n: {"type": "string", "minLength": 1, "maxLength": n}  # noqa: E731
ID = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_.-]+$"}
COUNT = {"type": ["integer", "null"], "minimum": 0, "maximum": 1000000}
LIMIT = dict(MONEY, type=["string", "number", "null"])
EDITABLE = {
    "name": TEXT(128), "billing_type": {"enum": list(BILLING_TYPES)},
    "billing_mode": {"enum": list(BILLING_MODES) + [None]}, "max_calls": COUNT, "cps_limit": COUNT,
    "daily_limit": LIMIT, "monthly_limit": LIMIT, "low_balance": LIMIT, "tariff_id": {"type": ["string", "null"], "maxLength": 64},
    "reseller_model": {"enum": list(RESELLER_MODELS)}, "commission_percent": MONEY,
    "timezone": TEXT(64), "billing_day": {"type": "integer", "minimum": 1, "maximum": 31},
    "may_create": {"enum": list(CREATE_RIGHTS)}, "allow_loss": {"type": "boolean"},
}
CREATE = {"type": "object", "additionalProperties": False, "required": ["role", "name"], "properties": dict(
    EDITABLE, role={"enum": [RESELLER, CLIENT]}, email={"type": "string", "minLength": 3, "maxLength": 254},
    password={"type": "string", "minLength": 1, "maxLength": 256}, credit_limit=MONEY, currency=TEXT(3))}
EDIT = {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": EDITABLE}
MOVE = {"type": "object", "additionalProperties": False, "required": ["amount", "idempotency_key"], "properties": {
    "amount": MONEY, "idempotency_key": TEXT(128), "reference": {"type": "string", "maxLength": 128},
    "description": {"type": "string", "maxLength": 256}}}
CREDIT = {"type": "object", "additionalProperties": False, "required": ["credit_limit", "idempotency_key"],
          "properties": {"credit_limit": MONEY, "idempotency_key": TEXT(128),
                         "description": {"type": "string", "maxLength": 256}}}
SIP_USER = {"type": "object", "additionalProperties": False, "required": ["username"], "properties": {
    "username": {"type": "string", "minLength": 3, "maxLength": 64, "pattern": "^[A-Za-z0-9_.+-]+$"}}}
API_KEY = {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {"name": TEXT(64)}}
INCREMENTS = {"type": ["object", "null"], "additionalProperties": False, "properties": {
    "minimum": {"type": "integer", "minimum": 0, "maximum": 99999},
    "initial": {"type": "integer", "minimum": 1, "maximum": 99999},
    "subsequent": {"type": "integer", "minimum": 1, "maximum": 99999}}}
WHEN = {"type": "string", "maxLength": 40, "pattern": r"^\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$"}
RATE_FIELDS = {
    "prefix": {"type": "string", "pattern": "^[0-9]{1,20}$"}, "name": {"type": "string", "maxLength": 128},
    "price": MONEY, "connect_fee": MONEY, "minimum": {"type": "integer", "minimum": 0, "maximum": 99999},
    "initial": {"type": "integer", "minimum": 1, "maximum": 99999},
    "subsequent": {"type": "integer", "minimum": 1, "maximum": 99999}, "effective_from": WHEN}
RATE = {"type": "object", "additionalProperties": False, "required": ["prefix", "price"], "properties": RATE_FIELDS}
MARKUP = {"markup_fixed": MONEY, "markup_percent": MONEY, "increments": INCREMENTS}
TARIFF_CREATE = {"type": "object", "additionalProperties": False, "properties": dict(
    MARKUP, name=TEXT(128), kind={"enum": ["table", "markup"]}, clone_from=ID,
    rates={"type": "array", "maxItems": 100, "items": RATE})}
TARIFF_EDIT = {"type": "object", "additionalProperties": False, "minProperties": 1,
               "properties": dict(MARKUP, name=TEXT(128))}
RATE_END = {"type": "object", "additionalProperties": False, "properties": {"effective_from": WHEN}}
AT = {"at": WHEN}
IMPORT = {"mode": {"enum": ["replace", "merge"], "default": "replace"}, "effective_from": WHEN,
          "dry_run": {"enum": ["true", "false"], "default": "false"}}
PAGE = {"limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
        "cursor": {"type": "string", "maxLength": 2048}}
SEARCH = dict(PAGE, role={"enum": [RESELLER, CLIENT]}, status={"enum": list(STATUSES)},
              q={"type": "string", "minLength": 1, "maxLength": 64})
HISTORY = dict(PAGE, kind={"enum": list(ENTRY_KINDS)},
               since={"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+Z?)?$"},
               until={"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+Z?)?$"})


class BadInput(Exception):
    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


_compiled: Dict[str, Callable] = {}


def _validator(schema: dict):
    """Compiled once per schema. Keyed by the schema's text, not its id(): a query's schema is built per
    request, and a freed dict's id is reused by the next one (the full suite once validated a history
    query with another route's schema)."""
    import fastjsonschema
    key = json.dumps(schema, sort_keys=True, default=str)
    if key not in _compiled:
        _compiled[key] = fastjsonschema.compile(_plain(schema))
    return _compiled[key]


def _plain(schema):
    """The schema without our own keywords."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if not k.startswith("x-")}
    return schema


def _validate(schema: dict, data, where: str) -> dict:
    import fastjsonschema
    try:
        return _validator(schema)(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        field = ".".join(str(p) for p in exc.path[1:]) or where
        if exc.rule == "required":
            missing = [k for k in schema.get("required", []) if k not in data]
            field, message = (missing[0] if missing else field), "is required"
        elif exc.rule == "additionalProperties":
            unknown = sorted(set(data) - set(schema.get("properties", {})))
            field, message = (unknown[0] if unknown else field), "is not a known field"
        elif exc.rule == "minProperties":
            message = "must name at least one field"
        else:
            message = exc.message.replace(exc.name, "").strip() or "is not valid"
        raise BadInput(field, message) from exc


def _money_fields(schema: dict, data: dict) -> dict:
    out = dict(data)
    for name, spec in schema.get("properties", {}).items():
        if spec.get("properties") and isinstance(out.get(name), dict):     # a nested object (a DID's cost)
            out[name] = _money_fields(spec, out[name])
        if spec.get("x-money") and out.get(name) is not None:
            value = out[name]
            if isinstance(value, str) and (not value.strip() or len(value) > 32):
                raise BadInput(name, "must be an amount")
            try:
                amount = money(value)
            except NotMoney as exc:
                raise BadInput(name, "must be an amount") from exc
            if abs(amount) >= Decimal("1e12") or amount != (value if isinstance(value, Decimal) else Decimal(str(value))):
                raise BadInput(name, "must be an amount below 10^12 with at most 6 decimals")
            out[name] = amount
    return out


def _deck(raw) -> str:
    raw = raw or b""
    if len(raw) > MAX_DECK_BYTES:
        raise BadInput("body", f"must be at most {MAX_DECK_BYTES} bytes (upload larger decks)", 413)
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise BadInput("body", "must be UTF-8 text") from exc


def _csv(p: Portal, lines, filename: str) -> Response:
    """A CSV answer; past MAX_CSV_ANSWER (a Lambda answers at most 6 MB) the rest streams to S3 and the
    answer is a 303 to a presigned URL valid 15 minutes."""
    import itertools
    lines = iter(lines)
    kept, size = [], 0
    for line in lines:
        kept.append(line)
        size += len(line)
        if size > MAX_CSV_ANSWER:
            url = p.decks.put_export(itertools.chain(kept, lines), filename)
            return Response(body="", status_code=303, headers={"Location": url, "Cache-Control": "no-store"})
    return Response(body="".join(kept), status_code=200,
                    headers={"Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
                             "Content-Disposition": f'attachment; filename="{filename}"'})


def _body(raw, schema: dict) -> dict:
    raw = raw or b""
    if len(raw) > MAX_BODY_BYTES:
        raise BadInput("body", f"must be at most {MAX_BODY_BYTES} bytes", 413)
    if not raw.strip() and not schema.get("required") and not schema.get("minProperties"):
        return {}                  # nothing to say: an empty body is the empty object
    try:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw, parse_float=Decimal,
                          parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInput("body", "must be a JSON object") from exc
    if not isinstance(data, dict):
        raise BadInput("body", "must be a JSON object")
    return _money_fields(schema, _validate(schema, data, "body"))


def _query(params: Optional[dict], spec: dict) -> dict:
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise BadInput(unknown[0], "is not a known query parameter")
    out = {}
    for name, rule in spec.items():
        if name not in params:
            if "default" in rule:
                out[name] = rule["default"]
            continue
        value = params[name]
        if rule.get("type") == "integer":
            if not value.isdigit() or len(value) > 6:
                raise BadInput(name, "must be a whole number")
            value = int(value)
        out[name] = value
    schema = {"type": "object", "properties": {k: {kk: vv for kk, vv in v.items() if kk != "default"}
                                                for k, v in spec.items()}}
    _validate(schema, out, "query")
    return out


# --- views ------------------------------------------------------------------------------------------

def _relative_path(account: Account, principal: Principal) -> str:
    """The path as the caller may see it: from the caller down (never the ids above it)."""
    parts = account.path.split("/")
    if principal.account_id in parts:
        return "/".join(parts[parts.index(principal.account_id):])
    return account.id


def account_view(account: Account, principal: Principal) -> dict:
    return {
        "id": account.id, "role": account.role, "name": account.name, "email": account.email,
        # the caller's own parent is above its wall, as every id in the part of the path it is not shown
        "parent_id": None if account.id == principal.account_id else account.parent_id,
        "path": _relative_path(account, principal), "status": account.status,
        "billing_type": account.billing_type, "billing_mode": account.billing_mode,
        "currency": account.currency, "timezone": account.timezone, "billing_day": account.billing_day,
        "tariff_id": account.tariff_id, "reseller_model": account.reseller_model,
        "commission_percent": account.commission_percent, "may_create": account.may_create,
        "allow_loss": account.allow_loss, "max_calls": account.max_calls, "cps_limit": account.cps_limit,
        "daily_limit": account.daily_limit, "monthly_limit": account.monthly_limit,
        "low_balance": account.low_balance, "created_at": account.created_at or None,
        "closed_at": account.closed_at, **balance_view(account),
    }


def balance_view(account: Account) -> dict:
    return {"balance": account.balance, "credit_limit": account.credit_limit, "held": account.held,
            "available": account.available, "currency": account.currency,
            "low": account.low_balance is not None and account.balance < account.low_balance}


def entry_view(item, account_id: str) -> dict:
    """A journal item, or a CDR (a call), as one line of the account's history: ``amount`` is what
    moved the account's own balance."""
    if hasattr(item, "entry_kind"):
        postings = {book: Decimal(v) for book, v in item.postings.items()}
        return {"id": item.entry_id, "kind": item.entry_kind, "at": item.created_at,
                "amount": postings.get(f"wallet:{account_id}", Decimal(0)), "postings": postings,
                "reference": item.ref, "description": item.description, "by": item.by,
                **({"details": item.details} if item.details else {})}
    charged = item.role != "admin"
    return {"id": "call#" + item.cdr_id.split("#", 1)[1], "kind": "call", "at": item.cdr_id.split("#", 1)[0],
            "amount": -(item.buy - item.commission) if charged else Decimal(0),
            "reference": item.call_id, "description": ("late " if item.late else "") + (
                "inbound call to " if item.direction == "inbound" else "call to ") + item.destination,
            "billsec": int(item.billsec), "sell": item.sell, "buy": item.buy, "profit": item.profit,
            **({"late": True} if item.late else {})}


# --- the decorator -----------------------------------------------------------------------------------

def portal() -> Portal:
    from chalicelib.bootstrap import container
    c = container()
    return Portal(c.store, c.identity, c.clock, c.decks, c.jobs)


def _json(status: int, body, headers: Optional[dict] = None) -> Response:
    return Response(body="" if body is None else json.dumps(body, default=str), status_code=status,
                    headers={"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})})


def _error(status: int, code: str, message: str, field: Optional[str] = None, **extra) -> Response:
    body = {"error": code, "message": message, **({"field": field} if field else {}), **extra}
    return _json(status, body)


def portal_route(path: str, method: str, summary: str, body: Optional[dict] = None, query: Optional[dict] = None,
                 ok: int = 200, auth: bool = True, tag: str = "accounts", csv_in: bool = False, csv_out: bool = False):
    """``csv_in``: the body is a CSV deck (text/csv), handed over as text; ``csv_out``: the answer is CSV."""
    def register(fn):
        ROUTES.append({"path": path, "method": method.lower(), "summary": summary, "body": body, "query": query,
                       "ok": ok, "auth": auth, "tag": tag, "name": fn.__name__, "doc": (fn.__doc__ or "").strip(),
                       "csv_in": csv_in, "csv_out": csv_out})

        def handler(**params):
            request = portal_bp.current_request
            try:
                principal = principal_of(request) if auth else None
                data = _body(request.raw_body, body) if body is not None else None
                if csv_in:
                    data = _deck(request.raw_body)
                q = _query(request.query_params, query) if query is not None else None
                result = fn(portal(), principal, data=data, query=q, **params)
                if isinstance(result, Response):
                    return result
                return _json(ok, result)
            except BadInput as exc:
                return _error(exc.status, "invalid_request", f"{exc.field} {exc.message}", exc.field)
            except InvalidInput as exc:
                return _error(400, "invalid_request", f"{exc.field} {exc.message}", exc.field)
            except InvalidAmount as exc:
                return _error(400, "invalid_request", str(exc), exc.field)
            except BadCursor:
                return _error(400, "invalid_request", "cursor is not one this list handed out", "cursor")
            except NotAuthenticated:
                return _error(401, "invalid_token", "a valid Bearer token or X-Portal-Key is required")
            except NotFound:
                return _json(404, NOT_FOUND)
            except NoSuchTariff:
                return _json(404, NO_TARIFF)
            except NoSuchImport:
                return _json(404, NO_IMPORT)
            except NoSuchDid:
                return _json(404, NO_DID)
            except NoSuchExport:
                return _json(404, NO_EXPORT)
            except Forbidden as exc:
                return _error(403, exc.code, exc.message)
            except Conflict as exc:
                return _error(409, exc.code, exc.message, **exc.details)
            except AlreadyExists as exc:
                field = {"identity": "username"}.get(exc.what, "id")
                return _error(409, "already_exists", f"{field} is taken", field)
            except InvalidRequest as exc:
                return _error(IDENTITY_STATUS.get(exc.code, 400), exc.code, exc.message, exc.field)
            except IdentityError as exc:
                return _error(IDENTITY_STATUS.get(exc.code, 400), exc.code, exc.message)
            except DeckInvalid as exc:
                return _error(400, "invalid_deck", f"{exc.failed_lines} line(s) of the deck are not valid; nothing "
                                                   "was applied", "body", errors=[e.to_dict() for e in exc.errors],
                              failed_lines=exc.failed_lines)
            except GroupTooLarge as exc:
                return _error(400, "invalid_request", f"the rates of prefixes starting {exc.group} are more than "
                                                      "one tariff can store", "prefix")
            except StoreBusy:
                log.exception("portal: store busy")
                return _error(503, "busy", "try again")
            except Exception:   # never a stack trace or a table name in an answer
                log.exception("portal request failed")
                return _error(500, "internal", "internal error")
        handler.__name__ = fn.__name__
        portal_bp.route(path, methods=[method], content_types=["text/csv"] if csv_in else ["application/json"])(handler)
        return fn
    return register


# --- routes ------------------------------------------------------------------------------------------

@portal_route("/me", "GET", "The signed-in account")
def me(p: Portal, principal, **_):
    return account_view(p.get(principal, principal.account_id), principal)


@portal_route("/accounts/{account_id}", "GET", "An account in the caller's subtree")
def get_account(p: Portal, principal, account_id, **_):
    return account_view(p.get(principal, account_id), principal)


@portal_route("/accounts/{account_id}", "PATCH", "Edit an account below the caller", body=EDIT)
def edit_account(p: Portal, principal, account_id, data, **_):
    return account_view(p.edit(principal, account_id, data), principal)


@portal_route("/accounts/{account_id}/children", "POST", "Create a reseller or client below an account",
              body=CREATE, ok=201)
def create_child(p: Portal, principal, account_id, data, **_):
    account, shown = p.create_child(principal, account_id, data)
    return dict(account_view(account, principal), **({"invitation_sent_to": shown["email"]}
                                                     if "email" in shown and "password" not in data else {}))


@portal_route("/accounts/{account_id}/children", "GET", "An account's direct children", query=PAGE)
def list_children(p: Portal, principal, account_id, query, **_):
    items, cursor = p.children(principal, account_id, query["limit"], query.get("cursor"))
    return {"items": [account_view(a, principal) for a in items], "next_cursor": cursor}


def tariff_view(tariff) -> dict:
    return {"id": tariff.id, "owner": tariff.owner, "name": tariff.name, "kind": tariff.kind,
            "markup_fixed": tariff.markup_fixed, "markup_percent": tariff.markup_percent,
            "increments": list(tariff.increments) if tariff.increments else None}


@portal_route("/accounts/{account_id}/tariffs", "GET", "The tariffs an account owns (its price lists)",
              query=PAGE, tag="tariffs")
def list_tariffs(p: Portal, principal, account_id, query, **_):
    items, cursor = p.tariffs(principal, account_id, query["limit"], query.get("cursor"))
    return {"items": [tariff_view(t) for t in items], "next_cursor": cursor}


RATE_PAGE = {"limit": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 1000},
             "cursor": {"type": "string", "maxLength": 2048}}


@portal_route("/accounts/{account_id}/tariffs/{tariff_id}", "GET",
              "One of an account's tariffs with its rate versions, a page at a time", query=RATE_PAGE, tag="tariffs")
def get_tariff(p: Portal, principal, account_id, tariff_id, query, **_):
    """Rates come in prefix order, every version of a prefix together, about ``limit`` versions a page
    (whole storage groups: a page may hold a few more); ``next_cursor`` fetches the next. The whole
    tariff at once: GET .../deck (CSV)."""
    tariff, book, cursor = p.tariff(principal, account_id, tariff_id, query["limit"], query.get("cursor"))
    return dict(tariff_view(tariff), rates=[dict(r.to_dict(), prefix=prefix) for prefix in sorted(book)
                                            for r in sorted(book[prefix], key=lambda v: v.effective_from)],
                next_cursor=cursor)


@portal_route("/accounts/{account_id}/tariffs", "POST", "Create a tariff the account sells with (or clone one)",
              body=TARIFF_CREATE, ok=201, tag="tariffs")
def create_tariff(p: Portal, principal, account_id, data, **_):
    """Empty, with up to 100 rates, or cloned (``clone_from``) from one of the account's own tariffs (every
    version) or from the one it is charged by (the prices it is charged now, as a table: never the
    parent's cost). Larger decks: import them as CSV. A new tariff charges nobody until it is assigned
    to a child (PATCH /accounts/{child} with tariff_id)."""
    return tariff_view(p.create_tariff(principal, account_id, data))


@portal_route("/accounts/{account_id}/tariffs/{tariff_id}", "PATCH", "Rename a tariff or change its markup",
              body=TARIFF_EDIT, tag="tariffs")
def edit_tariff(p: Portal, principal, account_id, tariff_id, data, **_):
    """A markup change prices the next call; calls already made keep the rate frozen in their record."""
    return tariff_view(p.edit_tariff(principal, account_id, tariff_id, data))


@portal_route("/accounts/{account_id}/tariffs/{tariff_id}", "DELETE", "Delete a tariff no account is charged by",
              ok=204, tag="tariffs")
def delete_tariff(p: Portal, principal, account_id, tariff_id, **_):
    p.delete_tariff(principal, account_id, tariff_id)
    return None


@portal_route("/accounts/{account_id}/tariffs/{tariff_id}/rates", "POST",
              "Add a rate, or a new version of one, from effective_from (default now)", body=RATE, ok=201,
              tag="tariffs")
def add_rate(p: Portal, principal, account_id, tariff_id, data, **_):
    """A version in force is never rewritten: a change is a new version from ``effective_from``, which may
    be in the future (a scheduled price change). A call is rated at the version in force when it was
    authorized, and its record names it."""
    rate, summary = p.add_rate(principal, account_id, tariff_id, data)
    return {"rate": rate.to_dict(), "change": summary}


@portal_route("/accounts/{account_id}/tariffs/{tariff_id}/rates/{prefix}/end", "POST",
              "End a rate from effective_from (default now): its numbers fall back to a shorter prefix",
              body=RATE_END, tag="tariffs")
def end_rate(p: Portal, principal, account_id, tariff_id, prefix, data, **_):
    rate, summary = p.end_rate(principal, account_id, tariff_id, prefix, data.get("effective_from"))
    return {"rate": rate.to_dict(), "change": summary}


@portal_route("/accounts/{account_id}/tariffs/{tariff_id}/deck", "PUT",
              "Import a CSV rate deck, all or nothing (dry_run=true: only report what it would change)",
              query=IMPORT, csv_in=True, tag="tariffs")
def import_deck(p: Portal, principal, account_id, tariff_id, data, query, **_):
    """Columns (header row, any order): prefix, price (required), name, connect_fee, minimum, initial,
    subsequent, effective_from, ended. Every line is checked before anything is written; a bad deck is a
    400 listing the first 100 bad lines by number. ``mode=replace`` (default) ends the prefixes the deck
    leaves out; ``merge`` only adds and changes. Importing the same deck again changes nothing."""
    import io
    return p.import_deck(principal, account_id, tariff_id, io.StringIO(data), query["mode"],
                         query.get("effective_from"), query["dry_run"] == "true")


@portal_route("/accounts/{account_id}/tariffs/{tariff_id}/deck", "GET",
              "Export a tariff as CSV: every version, or with at= the rates in force then", query=AT,
              csv_out=True, tag="tariffs")
def export_deck(p: Portal, principal, account_id, tariff_id, query, **_):
    return _csv(p, p.export_deck(principal, account_id, tariff_id, query.get("at")), f"{tariff_id}.csv")


@portal_route("/accounts/{account_id}/price-list", "GET",
              "The prices the account is charged, one row per prefix, as CSV", query=AT, csv_out=True,
              tag="tariffs")
def price_list(p: Portal, principal, account_id, query, **_):
    """What the account pays its parent now (or ``at``): its tariff's rates, or a markup applied to the
    parent's own prices, flattened. Nothing above the account's own price is shown."""
    return _csv(p, p.charged_prices(principal, account_id, query.get("at")), f"{account_id}-prices.csv")


IMPORT_OPEN = {"type": "object", "additionalProperties": False, "properties": {
    "mode": {"enum": ["replace", "merge"]}, "effective_from": WHEN, "dry_run": {"type": "boolean"}}}


def import_view(job) -> dict:
    return {"id": job.id, "tariff_id": job.tariff_id, "status": job.status, "mode": job.mode,
            "effective_from": job.effective_from, "dry_run": job.dry_run, "rows_read": job.rows,
            "transactions_written": job.written, "transactions": job.to_write, "result": job.result,
            "created_at": job.created_at, "started_at": job.started_at, "updated_at": job.updated_at}


@portal_route("/accounts/{account_id}/tariffs/{tariff_id}/imports", "POST",
              "Open an import of a large deck: upload it to the answer's presigned form, then start it",
              body=IMPORT_OPEN, ok=201, tag="tariffs")
def open_import(p: Portal, principal, account_id, tariff_id, data, **_):
    """For decks over 5 MB (up to 200 MB): POST the file as multipart/form-data to ``upload.url`` with
    ``upload.fields`` and a ``file`` part, within 15 minutes; then POST .../start. The deck is checked
    and applied by a background task exactly as PUT .../deck does it, all or nothing."""
    job, upload = p.open_import(principal, account_id, tariff_id, data)
    return dict(import_view(job), upload=upload)


@portal_route("/accounts/{account_id}/tariffs/{tariff_id}/imports/{import_id}/start", "POST",
              "Start an uploaded import (again: no-op)", ok=202, tag="tariffs")
def start_import(p: Portal, principal, account_id, tariff_id, import_id, **_):
    return import_view(p.start_import(principal, account_id, tariff_id, import_id))


@portal_route("/accounts/{account_id}/tariffs/{tariff_id}/imports/{import_id}", "GET",
              "An import's progress and outcome", tag="tariffs")
def import_status(p: Portal, principal, account_id, tariff_id, import_id, **_):
    """``status``: awaiting_upload, queued, reading (rows_read grows), applying (transactions_written of
    transactions), done (``result`` is what changed) or failed (``result`` says why: the deck's bad
    lines by number, and nothing was applied)."""
    return import_view(p.import_status(principal, account_id, tariff_id, import_id))


# --- DIDs -------------------------------------------------------------------------------------------------

DID_PRICES = {"setup": MONEY, "monthly": MONEY, "per_minute": MONEY}
DID_CREATE = {"type": "object", "additionalProperties": False, "required": ["number", "country"], "properties": dict(
    DID_PRICES, number={"type": "string", "minLength": 6, "maxLength": 24, "pattern": r"^[0-9+ ().-]+$"},
    country={"type": "string", "pattern": "^[A-Za-z]{2}$"}, description={"type": "string", "maxLength": 256},
    cost={"type": "object", "additionalProperties": False, "properties": DID_PRICES},
    increments={"type": "object", "additionalProperties": False, "properties": {
        "initial": {"type": "integer", "minimum": 1, "maximum": 3600},
        "subsequent": {"type": "integer", "minimum": 1, "maximum": 3600}}})}
DID_ASSIGN = {"type": "object", "additionalProperties": False, "required": ["to"],
              "properties": dict(DID_PRICES, to=ID)}


def did_view(did, account: Account) -> dict:
    """The DID at ``account``'s level: what it pays (the admin: the DID's cost) and, when it assigned the
    DID on, to whom and at what prices. Nothing priced above the account."""
    depth = did.depth_of(account.id)
    own = did.holders[depth]
    below = did.holders[depth + 1] if depth + 1 < len(did.holders) else None
    view = {"number": did.number, "country": did.country, "status": did.status, "description": did.description,
            "increments": {"initial": did.initial, "subsequent": did.subsequent}, "held_since": own.since,
            ("cost" if depth == 0 else "buy"): own.prices.to_dict(),
            "assigned_to": below.account_id if below else None, "assigned_since": below.since if below else None,
            "sell": below.prices.to_dict() if below else None,
            "holder": did.holder if below else None}
    if depth == 0:
        view["offer"] = did.offer.to_dict()
    return view


@portal_route("/accounts/{account_id}/dids", "POST", "Create a DID in the admin's pool (admin only)",
              body=DID_CREATE, ok=201, tag="dids")
def create_did(p: Portal, principal, account_id, data, **_):
    """``number`` in E.164 (a leading + or 00 and separators are dropped); ``cost`` is what the DID costs
    the operator (setup, monthly, per-minute: its per-minute is the admin's price on inbound calls);
    ``setup``, ``monthly`` and ``per_minute`` are the prices the admin charges when it assigns the DID
    (each assignment may name others). A closed number may be created again."""
    did = p.create_did(principal, account_id, data)
    return did_view(did, p.walled(principal, account_id))


@portal_route("/accounts/{account_id}/dids", "GET", "The DIDs an account holds, by number", query=PAGE, tag="dids")
def list_dids(p: Portal, principal, account_id, query, **_):
    account, items, cursor = p.dids(principal, account_id, query["limit"], query.get("cursor"))
    return {"items": [did_view(d, account) for d in items], "next_cursor": cursor}


@portal_route("/accounts/{account_id}/dids/{number}", "GET", "One of an account's DIDs, at its level", tag="dids")
def get_did(p: Portal, principal, account_id, number, **_):
    account, did = p.did(principal, account_id, number)
    return did_view(did, account)


@portal_route("/accounts/{account_id}/dids/{number}/assign", "POST",
              "Assign a DID the account holds to an account below it, at the account's prices", body=DID_ASSIGN,
              tag="dids")
def assign_did(p: Portal, principal, account_id, number, data, **_):
    """``to`` is any account below (the accounts in between hold the DID too, at the same prices);
    prices default to what the account pays (the admin: the DID's offer). A per-minute price below
    what the account pays is a 409 unless it allows losses. Setup and monthly fees are recorded with
    the assignment for invoicing; inbound minutes are billed per call at every level."""
    did = p.assign_did(principal, account_id, number, data)
    return did_view(did, p.walled(principal, account_id))


@portal_route("/accounts/{account_id}/dids/{number}/unassign", "POST",
              "Take a DID back into the account's pool, with every assignment below it", tag="dids")
def unassign_did(p: Portal, principal, account_id, number, **_):
    did = p.unassign_did(principal, account_id, number)
    return did_view(did, p.walled(principal, account_id))


@portal_route("/accounts/{account_id}/dids/{number}", "DELETE", "Close an unassigned DID (admin only)", ok=204,
              tag="dids")
def close_did(p: Portal, principal, account_id, number, **_):
    """Inbound calls to it are refused (did_closed) from now on; its history stays."""
    p.close_did(principal, account_id, number)
    return None


@portal_route("/accounts/{account_id}/dids/{number}/history", "GET",
              "A DID's assignments as the account may see them, oldest first", tag="dids")
def did_history(p: Portal, principal, account_id, number, **_):
    """Events (created, assigned, unassigned, closed) whose receiver is the account or below it, with
    the prices of each assignment."""
    return {"items": [e.to_dict() for e in p.did_history(principal, account_id, number)]}


# --- reports ---------------------------------------------------------------------------------------------

DAY = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+Z?)?$"}
CDR_FILTERS = {"since": DAY, "until": DAY, "account": ID, "prefix": {"type": "string", "pattern": "^[0-9]{1,20}$"},
               "disposition": {"enum": ["ANSWERED", "BUSY", "NO ANSWER", "FAILED"]},
               "direction": {"enum": ["outbound", "inbound"]}}
CDR_QUERY = dict(CDR_FILTERS, limit={"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                 cursor={"type": "string", "maxLength": 4096})
MONTH_QUERY = dict(PAGE, month={"type": "string", "pattern": r"^\d{4}-(0[1-9]|1[0-2])$"})
@portal_route("/accounts/{account_id}/cdrs", "GET", "Calls of the account's subtree at its level, newest first",
              query=CDR_QUERY, tag="reports")
def list_cdrs(p: Portal, principal, account_id, query, **_):
    """``since``/``until`` (dates or times, UTC, inclusive) bound the time the call was billed; ``account``
    narrows to an account below (a client: its own calls); ``prefix`` (of the normalised number, or the
    DID for inbound calls), ``disposition`` and ``direction`` filter the page read, which may then hold
    fewer than ``limit`` rows and still have a ``next_cursor``."""
    _, rows, cursor = p.cdrs(principal, account_id, query, query["limit"], query.get("cursor"))
    return {"items": [cdr_view(r) for r in rows], "next_cursor": cursor}


@portal_route("/accounts/{account_id}/cdrs/export", "GET", "The same CDRs as CSV, every page, streamed",
              query=CDR_FILTERS, csv_out=True, tag="reports")
def export_cdrs(p: Portal, principal, account_id, query, **_):
    """Read a page of 1,000 at a time and written out as read: past 5 MB the rest streams to S3 and the
    answer is a 303 to it."""
    pages = p.cdr_pages(principal, account_id, query)
    first = next(pages)                      # the wall and the filters are checked before any byte is sent
    import itertools
    return _csv(p, csv_lines(itertools.chain([first], pages)), f"{account_id}-cdrs.csv")


EXPORT_BODY = {"type": "object", "additionalProperties": False, "properties": CDR_FILTERS}


def export_view(job, url) -> dict:
    return {"id": job.id, "account_id": job.account_id, "status": job.status, "filters": job.filters,
            "rows": job.rows, "error": job.error, "download_url": url, "created_at": job.created_at,
            "updated_at": job.updated_at}


@portal_route("/accounts/{account_id}/cdrs/exports", "POST",
              "Export the CDRs of a large period to a CSV file, by a background task", body=EXPORT_BODY, ok=202,
              tag="reports")
def open_cdr_export(p: Portal, principal, account_id, data, **_):
    """The same filters as GET .../cdrs (a JSON body). The task reads the CDRs a page at a time as the
    caller may see them and uploads the CSV as it goes; poll GET .../cdrs/exports/{export_id} until
    ``status`` is done (``download_url``, valid 15 minutes; the file is kept 2 days) or failed."""
    return export_view(p.open_cdr_export(principal, account_id, data), None)


@portal_route("/accounts/{account_id}/cdrs/exports/{export_id}", "GET", "A CDR export's progress and its file",
              tag="reports")
def cdr_export_status(p: Portal, principal, account_id, export_id, **_):
    return export_view(*p.cdr_export(principal, account_id, export_id))


@portal_route("/accounts/{account_id}/reports/monthly", "GET",
              "The account's month: its totals, its money, its DID fees and each child's calls", query=MONTH_QUERY,
              tag="reports")
def monthly_report(p: Portal, principal, account_id, query, **_):
    """``month`` YYYY-MM (UTC; default this month). Calls count in the month they were billed. Totals at
    the account's level: revenue (what its children paid it), cost (what it paid its parent; the admin: the
    carrier cost), commission and profit; a client sees only what it paid. ``children`` (paged) is the
    same for the calls that came through each child. ``money``: payments, charges and transfers moving the
    account's balance; ``fees``: setup and monthly fees its DIDs record (invoiced by a later release)."""
    return p.monthly(principal, account_id, query.get("month"), query["limit"], query.get("cursor"))


@portal_route("/accounts/{account_id}/reports/sub-accounts", "GET",
              "Every child with its status, balance and this month's calls through it", query=MONTH_QUERY,
              tag="reports")
def sub_accounts_report(p: Portal, principal, account_id, query, **_):
    items, cursor = p.sub_accounts(principal, account_id, query.get("month"), query["limit"], query.get("cursor"))
    return {"items": items, "next_cursor": cursor}


@portal_route("/accounts/{account_id}/reports/dids", "GET",
              "The account's DIDs with their fees and inbound calls this month", query=MONTH_QUERY, tag="reports")
def did_report(p: Portal, principal, account_id, query, **_):
    items, cursor = p.did_report(principal, account_id, query.get("month"), query["limit"], query.get("cursor"))
    return {"items": items, "next_cursor": cursor}


@portal_route("/accounts/{account_id}/descendants", "GET", "Search an account's subtree", query=SEARCH)
def search(p: Portal, principal, account_id, query, **_):
    items, cursor = p.descendants(principal, account_id, query["limit"], query.get("cursor"), query.get("role"),
                                  query.get("status"), query.get("q"))
    return {"items": [account_view(a, principal) for a in items], "next_cursor": cursor}


def _status_route(action: str):
    @portal_route(f"/accounts/{{account_id}}/{action}", "POST", f"{action.capitalize()} an account below the caller")
    def change(p: Portal, principal, account_id, **_):
        return account_view(p.set_status(principal, account_id, action), principal)
    change.__name__ = f"{action}_account"
    return change


suspend_account, resume_account, close_account = (_status_route(a) for a in ("suspend", "resume", "close"))


@portal_route("/accounts/{account_id}/sip-users", "POST", "Add a SIP user to a client (password shown once)",
              body=SIP_USER, ok=201)
def add_sip_user(p: Portal, principal, account_id, data, **_):
    return p.add_sip_user(principal, account_id, data["username"])


@portal_route("/accounts/{account_id}/sip-users", "GET", "A client's SIP users")
def list_sip_users(p: Portal, principal, account_id, **_):
    return {"items": p.sip_users(principal, account_id)}


@portal_route("/accounts/{account_id}/sip-users/{username}", "DELETE", "Remove a SIP user", ok=204)
def remove_sip_user(p: Portal, principal, account_id, username, **_):
    p.remove_sip_user(principal, account_id, username)
    return None


def _money_route(kind: str, summary: str):
    @portal_route(f"/accounts/{{account_id}}/{kind}s", "POST", summary, body=MOVE, ok=201, tag="money")
    def move(p: Portal, principal, account_id, data, **_):
        entry, created = getattr(p, kind)(principal, account_id, data["amount"], data["idempotency_key"],
                                          data.get("reference", ""), data.get("description", ""))
        if created:
            metrics.count(kind.capitalize() + "s", service="portal")
        return dict(entry_view(entry, account_id), replayed=not created)
    move.__name__ = f"{kind}_route"
    return move


payment_route = _money_route("payment", "Record a payment from a child (its balance grows)")
charge_route = _money_route("charge", "Charge a child (limited by its available funds)")
transfer_route = _money_route("transfer", "Move part of the caller's balance to its child")


@portal_route("/accounts/{account_id}/credit-limit", "PUT", "Set a child's credit limit (ledgered)", body=CREDIT,
              tag="money")
def credit_limit(p: Portal, principal, account_id, data, **_):
    entry, created = p.set_credit_limit(principal, account_id, data["credit_limit"], data["idempotency_key"],
                                        data.get("description", ""))
    return dict(entry_view(entry, account_id), replayed=not created,
                **balance_view(p.get(principal, account_id)))


@portal_route("/accounts/{account_id}/balance", "GET", "Balance, held and available funds", tag="money")
def balance(p: Portal, principal, account_id, **_):
    return dict(balance_view(p.balance(principal, account_id)), account_id=account_id)


@portal_route("/accounts/{account_id}/ledger", "GET", "What moved the account's balance, newest first",
              query=HISTORY, tag="money")
def history(p: Portal, principal, account_id, query, **_):
    account, rows, cursor = p.history(principal, account_id, query["limit"], query.get("cursor"), query.get("kind"),
                                      query.get("since"), query.get("until"))
    return {"items": [entry_view(r, account.id) for r in rows], "next_cursor": cursor}


@portal_route("/accounts/{account_id}/api-keys", "POST", "Create an API key for the caller's own account",
              body=API_KEY, ok=201, tag="auth")
def create_api_key(p: Portal, principal, account_id, data, **_):
    _own(p, principal, account_id)
    key = p.identity.create_api_key(account_id, data["name"])
    return {"key": key, "name": data["name"], "header": "X-Portal-Key"}


@portal_route("/accounts/{account_id}/api-keys", "GET", "The caller's API keys", tag="auth")
def list_api_keys(p: Portal, principal, account_id, **_):
    _own(p, principal, account_id)
    return {"items": [{"ref": k.ref, "name": k.name, "status": k.status, "created_at": _iso(k.created_at)}
                      for k in p.identity.list_api_keys(account_id)]}


@portal_route("/accounts/{account_id}/api-keys/{ref}", "DELETE", "Revoke one of the caller's API keys", ok=204,
              tag="auth")
def revoke_api_key(p: Portal, principal, account_id, ref, **_):
    _own(p, principal, account_id)
    if not p.identity.revoke_api_key(account_id, ref):
        raise NotFound(ref)
    return None


def _iso(epoch) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _own(p: Portal, principal, account_id):
    p.walled(principal, account_id)
    if principal.account_id != account_id:
        raise Forbidden("forbidden", "API keys are managed by their own account")


@portal_bp.route("/openapi.json", methods=["GET"])
def openapi_document():
    from .openapi import document
    return _json(200, document(ROUTES))
