"""Builds ``/openapi.json`` (OpenAPI 3.0.3) from the portal's route declarations (``portal.ROUTES``).

Request bodies and query parameters come from each route's JSON Schema, turned into OpenAPI 3.0's
dialect: a ``type`` list becomes one ``type`` with ``nullable: true`` (or a ``oneOf``), our ``x-money``
keyword becomes ``oneOf: [decimal string, number]``, enums get their type. Responses name the
component schemas below (what ``portal.account_view``, ``balance_view`` and ``entry_view`` return).

The sign-in routes (``portal_auth``) are not declared through ``portal_route``; they are described
here by hand, from what ``portal_auth.parse_body`` accepts: a JSON object of exactly the listed
fields, each a non-empty string. tests/contract/test_openapi.py checks both directions (every app
route documented, every documented operation served) and each body's fields against the code.
"""
import copy
import re
from typing import Dict, List, Optional, Tuple

from chalicelib.domain.accounts import (BILLING_MODES, BILLING_TYPES, CREATE_RIGHTS, RESELLER_MODELS, ROLES,
                                        STATUSES)
from chalicelib.domain.ledger import ENTRY_KINDS
from chalicelib.domain.rate_deck import COLUMNS

OPENAPI_VERSION = "3.0.3"
#: what a client sends as an amount in text: at most 12 digits before the point and 6 after
MONEY_PATTERN = r"^-?[0-9]{1,12}(\.[0-9]{1,6})?$"
#: what the API answers: every amount is a decimal string ("0", "12.500000", "-3.200000")
MONEY_OUT_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"

BEARER = "bearerAuth"
PORTAL_KEY = "portalKey"
BOTH = [{BEARER: []}, {PORTAL_KEY: []}]
PUBLIC: List[dict] = []

DESCRIPTION = """\
Cascade's portal API: accounts in a walled tree (admin -> resellers -> clients) and the money between them.

* **Authentication**: `Authorization: Bearer <access_token>` from `POST /auth/sign-in` (15 minutes; renew with
  `POST /auth/refresh`), or `X-Portal-Key: cpk_...` (an API key of a reseller or the admin, for machines).
* **The wall**: a caller sees itself and its subtree (a client only itself). An account outside it answers
  `404 not_found` exactly like one that does not exist. Only an ancestor manages an account (money, settings,
  status); nobody manages itself.
* **Errors**: `{"error": code, "message": text, "field": name}` (`field` when one field is at fault).
* **Money**: amounts are answered as decimal strings (`"12.500000"`); send them as strings (`"12.50"`) or JSON
  numbers (parsed exactly, never as floats), at most 6 decimals and below 10^12.
* **Pages**: list routes answer `{"items": [...], "next_cursor": ...}`; pass `cursor=<next_cursor>` for the next
  page until `next_cursor` is null.
* **Idempotency**: every money movement carries an `idempotency_key` (the caller's own namespace): a retry with
  the same key and the same request answers the first entry (`replayed: true`); the same key with another
  amount, kind or account answers `409 idempotency_key_reused`.

Walk-through: docs/portal-api.md."""


# --- JSON Schema (draft 7, as the routes validate) -> OpenAPI 3.0 schema objects -------------------------

def _type_of(values) -> Optional[str]:
    kinds = {type(v) for v in values if v is not None}
    if kinds == {str}:
        return "string"
    if kinds and kinds <= {int}:
        return "integer"
    if kinds == {bool}:
        return "boolean"
    return None


def money_schema(nullable: bool = False, description: str = "") -> dict:
    text = {"type": "string", "pattern": MONEY_PATTERN, "example": "12.50"}
    if nullable:
        text["nullable"] = True           # null matches the text branch only, so oneOf still holds
    out = {"oneOf": [text, {"type": "number"}]}
    if description:
        out["description"] = description
    return out


def to_openapi(schema):
    """A JSON Schema (with our ``x-`` keywords) as an OpenAPI 3.0.3 schema object."""
    if isinstance(schema, list):
        return [to_openapi(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    types = schema.get("type")
    types = list(types) if isinstance(types, (list, tuple)) else ([types] if types else [])
    nullable = "null" in types
    types = [t for t in types if t != "null"]
    if schema.get("x-money"):
        return money_schema(nullable, schema.get("description", ""))
    out = {}
    for key, value in schema.items():
        if key.startswith("x-") or key == "type":
            continue
        if key == "properties":
            out[key] = {name: to_openapi(spec) for name, spec in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_openapi(value)
        elif key in ("oneOf", "anyOf", "allOf"):
            out[key] = to_openapi(value)
        else:
            out[key] = copy.deepcopy(value)
    if "enum" in out:
        if None in out["enum"]:
            nullable = True
        if not types:
            inferred = _type_of(out["enum"])
            types = [inferred] if inferred else []
    if len(types) == 1:
        out["type"] = types[0]
    elif len(types) > 1:
        out["oneOf"] = [{"type": t} for t in types]
    if nullable:
        out["nullable"] = True
    return out


# --- component schemas (what the views answer) ------------------------------------------------------

def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


MONEY_OUT = {"type": "string", "pattern": MONEY_OUT_PATTERN, "example": "12.500000",
             "description": "an amount as a decimal string"}
MONEY_OUT_OR_NULL = dict(MONEY_OUT, nullable=True)
STR = {"type": "string"}
STR_OR_NULL = {"type": "string", "nullable": True}
INT_OR_NULL = {"type": "integer", "nullable": True}


def _object(properties: dict, required=None, description: str = "") -> dict:
    out = {"type": "object", "properties": properties,
           "required": sorted(properties) if required is None else list(required)}
    if description:
        out["description"] = description
    return out


BALANCE_FIELDS = {
    "balance": dict(MONEY_OUT, description="the account's balance with its parent"),
    "credit_limit": dict(MONEY_OUT, description="how far below zero a postpaid account may go"),
    "held": dict(MONEY_OUT, description="set aside for calls in progress"),
    "available": dict(MONEY_OUT, description="balance + credit_limit (postpaid only) - held: what may still be spent"),
    "currency": STR,
    "low": {"type": "boolean", "description": "balance is below the account's low_balance warning level"},
}

SCHEMAS: Dict[str, dict] = {
    "Error": _object({
        "error": dict(STR, description="a stable code: invalid_request, invalid_token, not_found, forbidden, "
                                       "insufficient_funds, idempotency_key_reused, ..."),
        "message": dict(STR, description="for people"),
        "field": dict(STR, description="the field at fault, when there is one"),
        "retry_after": {"type": "integer", "description": "seconds (429 answers, with a Retry-After header)"},
        "open_children": {"type": "integer", "description": "409 has_open_children: how many are still open"},
        "used_by": {"type": "integer", "description": "409 tariff_in_use: how many accounts it charges"},
        "prefix": dict(STR, description="409 version_in_force: the prefix whose version is in force"),
        "failed_lines": {"type": "integer", "description": "400 invalid_deck: how many lines were refused"},
        "errors": {"type": "array", "description": "400 invalid_deck: the first 100 refused lines",
                   "items": _object({"line": {"type": "integer"}, "field": STR, "message": STR})},
    }, required=["error", "message"]),
    "Account": _object({
        "id": STR, "role": {"type": "string", "enum": list(ROLES)}, "name": STR, "email": STR_OR_NULL,
        "parent_id": dict(STR_OR_NULL, description="null for the root"),
        "path": dict(STR, description="ids from the caller down to this account, joined by '/'"),
        "status": {"type": "string", "enum": list(STATUSES)},
        "billing_type": {"type": "string", "enum": list(BILLING_TYPES)},
        "billing_mode": {"type": "string", "enum": list(BILLING_MODES) + [None], "nullable": True,
                         "description": "null: inherited from the nearest ancestor, then the tree"},
        "timezone": STR, "billing_day": {"type": "integer"}, "tariff_id": STR_OR_NULL,
        "reseller_model": {"type": "string", "enum": list(RESELLER_MODELS)}, "commission_percent": MONEY_OUT,
        "may_create": {"type": "string", "enum": list(CREATE_RIGHTS)}, "allow_loss": {"type": "boolean"},
        "max_calls": INT_OR_NULL, "cps_limit": INT_OR_NULL, "daily_limit": MONEY_OUT_OR_NULL,
        "monthly_limit": MONEY_OUT_OR_NULL, "low_balance": MONEY_OUT_OR_NULL, "created_at": STR_OR_NULL,
        "closed_at": STR_OR_NULL, **BALANCE_FIELDS,
    }),
    "Balance": _object(dict(BALANCE_FIELDS, account_id=STR)),
    "Entry": _object({
        "id": STR, "kind": {"type": "string", "enum": list(ENTRY_KINDS)},
        "at": dict(STR, description="when (ISO 8601, UTC)"),
        "amount": dict(MONEY_OUT, description="what this entry moved the account's own balance by"),
        "postings": {"type": "object", "additionalProperties": MONEY_OUT,
                     "description": "book -> amount, summing to zero: wallet:<id>, sales:<id>, world"},
        "reference": STR, "description": STR, "by": dict(STR_OR_NULL, description="the account that made it"),
        "details": {"type": "object", "description": "a credit-limit change's old and new limit"},
        "billsec": {"type": "integer"}, "sell": MONEY_OUT, "buy": MONEY_OUT, "profit": MONEY_OUT,
        "late": {"type": "boolean"},
    }, required=["id", "kind", "at", "amount", "reference", "description"],
        description="one line of an account's history: a journal entry, or a call (kind call, with billsec, "
                    "sell, buy and profit and no postings)"),
    "AccountPage": _object({"items": {"type": "array", "items": _ref("Account")}, "next_cursor": STR_OR_NULL}),
    "EntryPage": _object({"items": {"type": "array", "items": _ref("Entry")}, "next_cursor": STR_OR_NULL}),
    "CreatedAccount": {"allOf": [_ref("Account"), {"type": "object", "properties": {
        "invitation_sent_to": dict(STR, description="where the set-password link went (an e-mail without a "
                                                    "password was given)")}}]},
    "Movement": {"allOf": [_ref("Entry"), _object({"replayed": {
        "type": "boolean", "description": "true: this idempotency key was used before; nothing moved again"}})]},
    "CreditLimitChange": {"allOf": [_ref("Entry"), _object(dict(BALANCE_FIELDS, replayed={"type": "boolean"}))]},
    "SipUser": _object({"username": STR, "account_id": STR, "status": STR}),
    "NewSipUser": {"allOf": [_ref("SipUser"), _object({"password": dict(STR, description="shown once")})]},
    "SipUserList": _object({"items": {"type": "array", "items": _ref("SipUser")}}),
    "NewApiKey": _object({"key": dict(STR, description="cpk_..., shown once; send it as X-Portal-Key"),
                          "name": STR, "header": {"type": "string", "enum": ["X-Portal-Key"]}}),
    "ApiKeyList": _object({"items": {"type": "array", "items": _object({
        "ref": STR, "name": STR, "status": {"type": "string", "enum": ["active", "revoked"]},
        "created_at": {"type": "string", "description": "ISO 8601, UTC"}})}}),
    "Session": _object({
        "access_token": dict(STR, description="a JWT for Authorization: Bearer, valid expires_in seconds"),
        "refresh_token": dict(STR, description="single use: POST /auth/refresh answers a new pair"),
        "token_type": {"type": "string", "enum": ["Bearer"]}, "expires_in": {"type": "integer"},
        "account": _object({"id": STR, "role": {"type": "string", "enum": list(ROLES)}})}),
    "Principal": _object({"account_id": STR, "role": {"type": "string", "enum": list(ROLES)}, "path": STR,
                          "via": {"type": "string", "enum": ["token", "api_key"]}}),
    "Accepted": _object({"status": STR, "message": STR}),
    "Tariff": _object({
        "id": STR, "owner": dict(STR, description="the account that sells with it"), "name": STR,
        "kind": {"type": "string", "enum": ["table", "markup"]},
        "markup_fixed": dict(MONEY_OUT, description="markup tariffs: added to the owner's own price"),
        "markup_percent": dict(MONEY_OUT, description="markup tariffs: percent on the owner's own price"),
        "increments": {"type": "array", "items": {"type": "integer"}, "nullable": True,
                       "description": "[minimum, initial, subsequent] seconds overriding the rates'"}}),
    "TariffPage": _object({"items": {"type": "array", "items": _ref("Tariff")}, "next_cursor": STR_OR_NULL}),
    "TariffWithRates": {"allOf": [_ref("Tariff"), _object({"rates": {
        "type": "array", "description": "every version of every prefix, by prefix",
        "items": _object({
            "prefix": STR, "name": STR, "price": dict(MONEY_OUT, description="per minute"),
            "connect_fee": MONEY_OUT, "minimum": {"type": "integer"}, "initial": {"type": "integer"},
            "subsequent": {"type": "integer"},
            "effective_from": dict(STR, description="ISO 8601, UTC: the newest version in force rates calls"),
            "ended": {"type": "boolean", "description": "from effective_from the prefix has no rate here"}})},
        "next_cursor": STR_OR_NULL})]},
    "DeckChange": _object({
        "added": {"type": "integer", "description": "prefixes that had no rate in force"},
        "changed": {"type": "integer"}, "ended": {"type": "integer"},
        "unchanged": {"type": "integer", "description": "rows equal to the version they would follow"},
        "sample": _object({k: {"type": "array", "items": STR} for k in ("added", "changed", "ended")},
                          description="the first 20 prefixes of each"),
        "effective_from": STR, "mode": {"type": "string", "enum": ["replace", "merge"]},
        "dry_run": {"type": "boolean", "description": "true: nothing was written"}}),
    "RateChange": _object({"rate": _ref("Rate"), "change": _ref("DeckChange")}),
    "Import": _object({
        "id": STR, "tariff_id": STR,
        "status": {"type": "string", "enum": ["awaiting_upload", "queued", "reading", "applying", "done", "failed"]},
        "mode": {"type": "string", "enum": ["replace", "merge"]}, "effective_from": STR_OR_NULL,
        "dry_run": {"type": "boolean"}, "rows_read": {"type": "integer"},
        "transactions_written": {"type": "integer"}, "transactions": {"type": "integer"},
        "result": {"type": "object", "nullable": True,
                   "description": "done: the change (as DeckChange); failed: error, message, and for a bad deck "
                                  "failed_lines and errors by line"},
        "created_at": STR, "started_at": STR_OR_NULL, "updated_at": STR_OR_NULL}),
    "OpenedImport": {"allOf": [_ref("Import"), _object({"upload": _object({
        "url": dict(STR, description="POST the deck here as multipart/form-data"),
        "fields": {"type": "object", "additionalProperties": STR,
                   "description": "form fields to send before the file part"},
        "expires_in": {"type": "integer"}, "max_bytes": {"type": "integer"}})})]},
    "Rate": _object({
        "prefix": STR, "name": STR, "price": dict(MONEY_OUT, description="per minute"), "connect_fee": MONEY_OUT,
        "minimum": {"type": "integer"}, "initial": {"type": "integer"}, "subsequent": {"type": "integer"},
        "effective_from": STR, "ended": {"type": "boolean", "description": "from effective_from the prefix has no "
                                                                          "rate here"}}),
    "Did": _object({
        "number": dict(STR, description="E.164 digits, without +"), "country": STR,
        "status": {"type": "string", "enum": ["active", "closed"]}, "description": STR,
        "increments": _object({"initial": {"type": "integer"}, "subsequent": {"type": "integer"}}),
        "held_since": STR,
        "cost": {"allOf": [_ref("DidPrices")], "description": "the admin only: what the DID costs the operator"},
        "offer": {"allOf": [_ref("DidPrices")], "description": "the admin only: its default prices when assigning"},
        "buy": {"allOf": [_ref("DidPrices")], "description": "what the account pays for it (not the admin)"},
        "assigned_to": dict(STR_OR_NULL, description="the child it was assigned on to"),
        "assigned_since": STR_OR_NULL,
        "sell": {"allOf": [_ref("DidPrices")], "nullable": True,
                 "description": "what the account charges the child it assigned it to"},
        "holder": dict(STR_OR_NULL, description="when assigned on: the account at the end of the chain (the "
                                                "client that takes its calls; a reseller holding it takes none)"),
    }, required=["number", "country", "status", "description", "increments", "held_since", "assigned_to",
                 "assigned_since", "sell", "holder"]),
    "Cdr": _object({
        "id": dict(STR, description="stable id of the call's CDR"), "call_id": dict(STR, description="as the switch sent it"),
        "billed_at": dict(STR, description="ISO 8601, UTC: when the completion billed it (the period filters use it)"),
        "started_at": STR, "client_id": STR, "direction": {"type": "string", "enum": ["outbound", "inbound"]},
        "destination": dict(STR, description="the normalised number; inbound: the DID"),
        "prefix": STR, "destination_name": STR,
        "disposition": {"type": "string", "enum": ["ANSWERED", "BUSY", "NO ANSWER", "FAILED"]},
        "billsec": {"type": "integer"}, "billed_seconds": {"type": "integer", "description": "at the viewer's increments"},
        "buy": dict(MONEY_OUT, description="what the viewing account paid for it"),
        "sell": dict(MONEY_OUT_OR_NULL, description="what its child paid it (null for a client)"),
        "commission": MONEY_OUT, "profit": dict(MONEY_OUT_OR_NULL, description="sell - buy + commission"),
        "late": {"type": "boolean"}, "over_max": {"type": "boolean"}}),
    "CdrExport": _object({
        "id": STR, "account_id": STR, "status": {"type": "string", "enum": ["queued", "writing", "done", "failed"]},
        "filters": {"type": "object", "description": "as sent (GET .../cdrs's filters)"},
        "rows": {"type": "integer", "description": "CDRs written (when done)"}, "error": STR_OR_NULL,
        "download_url": dict(STR_OR_NULL, description="when done: the CSV, a presigned URL valid 15 minutes"),
        "created_at": STR, "updated_at": STR_OR_NULL}),
    "CdrPage": _object({"items": {"type": "array", "items": _ref("Cdr")}, "next_cursor": STR_OR_NULL}),
    "Figures": _object({
        "calls": {"type": "integer"}, "answered": {"type": "integer"}, "seconds": {"type": "integer"},
        "minutes": MONEY_OUT, "revenue": dict(MONEY_OUT, description="what the children paid"),
        "cost": dict(MONEY_OUT, description="what the account paid (a client: all it shows)"),
        "commission": MONEY_OUT, "profit": MONEY_OUT}, required=["calls", "answered", "seconds", "minutes", "cost"]),
    "MonthlyReport": _object({
        "account_id": STR, "month": STR, "role": {"type": "string", "enum": list(ROLES)},
        "totals": _ref("Figures"),
        "money": _object({"payments": MONEY_OUT, "charges": MONEY_OUT, "transfers": MONEY_OUT, "other": MONEY_OUT}),
        "fees": _object({"did_setup": MONEY_OUT, "did_monthly": MONEY_OUT, "total": MONEY_OUT}),
        "children": {"type": "array", "items": {"allOf": [_ref("Figures"), _object({"account_id": STR})]}},
        "next_cursor": STR_OR_NULL}),
    "SubAccountsReport": _object({"items": {"type": "array", "items": {"allOf": [_ref("Figures"), _object({
        "account_id": STR, "name": STR, "role": {"type": "string", "enum": list(ROLES)},
        "status": {"type": "string", "enum": list(STATUSES)}, "balance": MONEY_OUT, "available": MONEY_OUT,
        "currency": STR, "month": STR})]}}, "next_cursor": STR_OR_NULL}),
    "DidReport": _object({"items": {"type": "array", "items": {"allOf": [_ref("Figures"), _object({
        "number": STR, "country": STR, "assigned_to": STR_OR_NULL, "holder": STR_OR_NULL,
        "setup_fee": MONEY_OUT, "monthly_fee": MONEY_OUT})]}}, "next_cursor": STR_OR_NULL}),
    "DidPrices": _object({"setup": MONEY_OUT, "monthly": MONEY_OUT,
                          "per_minute": dict(MONEY_OUT, description="inbound minutes")}),
    "DidPage": _object({"items": {"type": "array", "items": _ref("Did")}, "next_cursor": STR_OR_NULL}),
    "DidHistory": _object({"items": {"type": "array", "items": _object({
        "event": {"type": "string", "enum": ["created", "assigned", "unassigned", "closed"]},
        "account_id": dict(STR, description="the account that got or lost the DID"), "at": STR,
        "by": STR_OR_NULL, "prices": _ref("DidPrices")}, required=["event", "account_id", "at", "by"])}}),
}

#: (method, path) -> the component its success answer is
RESPONSES: Dict[Tuple[str, str], str] = {
    ("get", "/me"): "Account",
    ("get", "/accounts/{account_id}"): "Account",
    ("patch", "/accounts/{account_id}"): "Account",
    ("post", "/accounts/{account_id}/children"): "CreatedAccount",
    ("get", "/accounts/{account_id}/children"): "AccountPage",
    ("get", "/accounts/{account_id}/descendants"): "AccountPage",
    ("post", "/accounts/{account_id}/suspend"): "Account",
    ("post", "/accounts/{account_id}/resume"): "Account",
    ("post", "/accounts/{account_id}/close"): "Account",
    ("post", "/accounts/{account_id}/sip-users"): "NewSipUser",
    ("get", "/accounts/{account_id}/sip-users"): "SipUserList",
    ("post", "/accounts/{account_id}/payments"): "Movement",
    ("post", "/accounts/{account_id}/charges"): "Movement",
    ("post", "/accounts/{account_id}/transfers"): "Movement",
    ("put", "/accounts/{account_id}/credit-limit"): "CreditLimitChange",
    ("get", "/accounts/{account_id}/balance"): "Balance",
    ("get", "/accounts/{account_id}/ledger"): "EntryPage",
    ("post", "/accounts/{account_id}/api-keys"): "NewApiKey",
    ("get", "/accounts/{account_id}/api-keys"): "ApiKeyList",
    ("get", "/accounts/{account_id}/tariffs"): "TariffPage",
    ("get", "/accounts/{account_id}/tariffs/{tariff_id}"): "TariffWithRates",
    ("post", "/accounts/{account_id}/tariffs"): "Tariff",
    ("patch", "/accounts/{account_id}/tariffs/{tariff_id}"): "Tariff",
    ("post", "/accounts/{account_id}/tariffs/{tariff_id}/rates"): "RateChange",
    ("post", "/accounts/{account_id}/tariffs/{tariff_id}/rates/{prefix}/end"): "RateChange",
    ("put", "/accounts/{account_id}/tariffs/{tariff_id}/deck"): "DeckChange",
    ("post", "/accounts/{account_id}/tariffs/{tariff_id}/imports"): "OpenedImport",
    ("post", "/accounts/{account_id}/tariffs/{tariff_id}/imports/{import_id}/start"): "Import",
    ("get", "/accounts/{account_id}/tariffs/{tariff_id}/imports/{import_id}"): "Import",
    ("post", "/accounts/{account_id}/dids"): "Did",
    ("get", "/accounts/{account_id}/dids"): "DidPage",
    ("get", "/accounts/{account_id}/dids/{number}"): "Did",
    ("post", "/accounts/{account_id}/dids/{number}/assign"): "Did",
    ("post", "/accounts/{account_id}/dids/{number}/unassign"): "Did",
    ("get", "/accounts/{account_id}/dids/{number}/history"): "DidHistory",
    ("get", "/accounts/{account_id}/cdrs"): "CdrPage",
    ("post", "/accounts/{account_id}/cdrs/exports"): "CdrExport",
    ("get", "/accounts/{account_id}/cdrs/exports/{export_id}"): "CdrExport",
    ("get", "/accounts/{account_id}/reports/monthly"): "MonthlyReport",
    ("get", "/accounts/{account_id}/reports/sub-accounts"): "SubAccountsReport",
    ("get", "/accounts/{account_id}/reports/dids"): "DidReport",
}
CSV = {"type": "string", "description": "CSV with a header row: " + ", ".join(COLUMNS)}
#: CSV answers that are not rate decks
CSV_OUT = {("get", "/accounts/{account_id}/cdrs/export"): {
    "type": "string", "description": "CSV with a header row: billed_at, call_id, client_id, direction, destination, "
                                     "prefix, destination_name, disposition, billsec, billed_seconds, buy, sell, "
                                     "commission, profit, late"}}

ERRORS = {
    400: "invalid_request: a field, the body or a query parameter is not valid (`field` names it); "
         "invalid_deck: lines of a CSV deck are not valid (`errors` lists them by line number)",
    401: "invalid_token: no valid Bearer token or X-Portal-Key",
    403: "the caller may not do this (forbidden, not_allowed_to_create, caller_not_active, clients_sell_nothing)",
    404: "not_found: no such account, or one outside the caller's subtree (the same answer); no such tariff",
    409: "the account's state refuses it: insufficient_funds, idempotency_key_reused, has_open_children, "
         "account_closed, changed_meanwhile, already_exists, tariff_in_use, version_in_force, did_assigned, "
         "below_cost, ...",
    413: "invalid_request: the body is larger than 16 KB",
    429: "locked or too_many_attempts: try again after Retry-After seconds",
    503: "busy: the store is contended; try again",
}
UNSUPPORTED_MEDIA = {"description": "the request's Content-Type is not the route's (application/json; text/csv for "
                                    "a deck) (answered by the framework "
                                    "as {\"Code\": \"UnsupportedMediaType\", \"Message\": ...})",
                     "content": {"application/json": {"schema": {"type": "object"}}}}


def _error(status: int, text: Optional[str] = None) -> dict:
    out = {"description": text or ERRORS[status], "content": {"application/json": {"schema": _ref("Error")}}}
    if status == 429:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return out


def _ok(status: int, schema: Optional[dict], text: str, media: str = "application/json") -> dict:
    if status == 204 or schema is None:
        return {"description": text}
    return {"description": text, "content": {media: {"schema": schema}}}


def _path_parameters(path: str) -> List[dict]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in re.findall(r"{([^}]+)}", path)]


def _query_parameters(spec: Optional[dict]) -> List[dict]:
    out = []
    for name, rule in (spec or {}).items():
        out.append({"name": name, "in": "query", "required": False, "schema": to_openapi(rule)})
    return out


def _body(schema: dict, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": to_openapi(schema)}}}


def _operation_ids(routes) -> List[str]:
    """The declared handler names, made unique (routes built by a factory share one name)."""
    names = [r.get("name") or "operation" for r in routes]
    out = []
    for route, name in zip(routes, names):
        if names.count(name) > 1:
            tail = [p for p in route["path"].split("/") if p and not p.startswith("{")][-1]
            name = f"{name}_{re.sub(r'[^A-Za-z0-9]+', '_', tail)}"
        out.append(name)
    return out


def portal_operation(route: dict, operation_id: str) -> dict:
    method, path = route["method"], route["path"]
    component = RESPONSES.get((method, path))
    schema = _ref(component) if component else {"type": "object"}
    if route.get("csv_out"):
        responses = {str(route["ok"]): _ok(route["ok"], CSV_OUT.get((method, path), CSV), route["summary"], "text/csv"),
                     "303": {"description": "the CSV is larger than 5 MB: it is at Location, a presigned URL "
                                            "valid 15 minutes",
                             "headers": {"Location": {"schema": {"type": "string"}}}}}
    else:
        responses = {str(route["ok"]): _ok(route["ok"], schema, route["summary"])}
    if route.get("body") is not None or route.get("query") is not None or route.get("csv_in"):
        responses["400"] = _error(400)
    if route.get("auth", True):
        responses["401"] = _error(401)
        responses["403"] = _error(403)
    if "{" in path:
        responses["404"] = _error(404)
    if method != "get":
        responses["409"] = _error(409)
    if route.get("body") is not None or route.get("csv_in"):
        responses["413"] = _error(413, "invalid_request: the body is larger than 16 KB (a CSV deck: 5 MB)")
        responses["415"] = UNSUPPORTED_MEDIA
    responses["503"] = _error(503)
    op = {"tags": [route.get("tag") or "accounts"], "summary": route["summary"], "operationId": operation_id,
          "responses": dict(sorted(responses.items()))}
    if route.get("doc"):
        op["description"] = route["doc"]
    parameters = _path_parameters(path) + _query_parameters(route.get("query"))
    if parameters:
        op["parameters"] = parameters
    if route.get("body") is not None:
        op["requestBody"] = _body(route["body"])
    if route.get("csv_in"):
        op["requestBody"] = {"required": True, "content": {"text/csv": {"schema": CSV}}}
    op["security"] = BOTH if route.get("auth", True) else PUBLIC
    return op


# --- the sign-in routes (portal_auth), by hand ----------------------------------------------------

def _fields(*names: str) -> dict:
    """What portal_auth.parse_body accepts: exactly these fields, each a non-empty string (the
    identity service then checks e-mail addresses and the password policy)."""
    return {"type": "object", "additionalProperties": False, "required": list(names),
            "properties": {n: dict({"type": "string", "minLength": 1}, **AUTH_FIELDS.get(n, {})) for n in names}}


AUTH_ROUTES = [
    # (path, method, operationId, summary, body fields, ok status, ok component, errors, security)
    ("/auth/sign-in", "post", "sign_in", "Sign in with e-mail and password", ("email", "password"), 200, "Session",
     (400, 401, 413, 429), PUBLIC),
    ("/auth/refresh", "post", "refresh", "A new access token (and refresh token) for a refresh token",
     ("refresh_token",), 200, "Session", (400, 401, 413), PUBLIC),
    ("/auth/sign-out", "post", "sign_out", "End the sign-in the refresh token belongs to (unknown tokens too)",
     ("refresh_token",), 204, None, (400, 413), PUBLIC),
    ("/auth/password-reset", "post", "password_reset",
     "Mail a reset link (the same answer whether or not the address signs in)", ("email",), 202, "Accepted",
     (400, 413, 429), PUBLIC),
    ("/auth/password-reset/confirm", "post", "password_reset_confirm",
     "Set a new password with the token from the mailed link (ends every session)", ("token", "password"), 204,
     None, (400, 401, 413), PUBLIC),
    ("/auth/password", "post", "change_password",
     "Change the signed-in account's password (ends every other session; answers a new one)",
     ("old_password", "new_password"), 200, "Session", (400, 401, 403, 413, 429), [{BEARER: []}]),
    ("/auth/me", "get", "auth_me", "Who the credentials belong to", None, 200, "Principal", (401,), BOTH),
]
AUTH_TEXT = {
    401: "invalid_credentials (wrong e-mail or password) or invalid_token",
    403: "forbidden: an API key cannot change a password",
    400: "invalid_request or weak_password (12 to 256 characters): `field` names it",
}
NEW_PASSWORD = {"minLength": 12, "maxLength": 256, "description": "12 to 256 characters, not only spaces"}
AUTH_FIELDS = {
    "email": {"format": "email", "maxLength": 254, "description": "the login's e-mail (case-insensitive)"},
    "token": {"description": "the token= part of the mailed link"},
    "new_password": NEW_PASSWORD,
}


def auth_operation(path, method, operation_id, summary, fields, ok, component, errors, security) -> dict:
    schema = _ref(component) if component else None
    responses = {str(ok): _ok(ok, schema, summary)}
    for status in errors:
        responses[str(status)] = _error(status, AUTH_TEXT.get(status))
    if fields is not None:
        responses["415"] = UNSUPPORTED_MEDIA
    op = {"tags": ["auth"], "summary": summary, "operationId": operation_id,
          "responses": dict(sorted(responses.items())), "security": security}
    if fields is not None:
        schema = _fields(*fields)
        if operation_id == "password_reset_confirm":        # here "password" is the new one
            schema["properties"]["password"].update(NEW_PASSWORD)
        op["requestBody"] = _body(schema)
    return op


def document(routes) -> dict:
    """The OpenAPI 3.0.3 document of the portal: ``routes`` (portal.ROUTES), the sign-in routes and
    ``GET /openapi.json`` itself."""
    paths: Dict[str, dict] = {}
    for route, operation_id in zip(routes, _operation_ids(routes)):
        paths.setdefault(route["path"], {})[route["method"]] = portal_operation(route, operation_id)
    for spec in AUTH_ROUTES:
        paths.setdefault(spec[0], {})[spec[1]] = auth_operation(*spec)
    paths["/openapi.json"] = {"get": {
        "tags": ["meta"], "summary": "This document", "operationId": "openapi_document", "security": PUBLIC,
        "responses": {"200": _ok(200, {"type": "object"}, "the OpenAPI 3.0.3 document")}}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Cascade portal API", "version": "1", "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "tags": [{"name": "accounts", "description": "the account tree, behind the wall"},
                 {"name": "money", "description": "payments, charges, transfers, credit limits, balance, ledger"},
                 {"name": "tariffs", "description": "the price lists an account sells with"},
                 {"name": "dids", "description": "numbers for inbound calls, assigned down the tree"},
                 {"name": "reports", "description": "CDRs and monthly figures at an account's level"},
                 {"name": "auth", "description": "sign-in, sessions, passwords and API keys"},
                 {"name": "meta", "description": "this document"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                         "description": "access_token from POST /auth/sign-in (or /auth/refresh)"},
                PORTAL_KEY: {"type": "apiKey", "in": "header", "name": "X-Portal-Key",
                             "description": "an API key (cpk_...) of a reseller or the admin"},
            },
            "schemas": copy.deepcopy(SCHEMAS),
        },
        "security": BOTH,
    }
