"""What the switch API accepts, checked the same way for every entrypoint (API Gateway through Chalice,
the Lambda function URL, `make run`), before anything reads or writes storage.

One normalisation for every text field: surrounding spaces, tabs, CRs and LFs are stripped (what a
switch's templating may leave), nothing else is changed. Then: valid Unicode (a lone surrogate such as "\\ud800" is refused, it cannot be stored as UTF-8), no
control characters, and a bound in UTF-8 **bytes** (what DynamoDB counts), not in characters.

Hostile bodies are 4xx, never 5xx (a 5xx tells a switch to retry): a size cap before parsing, deep
nesting (RecursionError in the parser), integers too long to be anything we accept (Python refuses
to convert more than 4,300 digits at all), NaN/Infinity, duplicate keys, bytes that are not UTF-8.
"""
import json
from decimal import Decimal
from typing import Mapping, Optional

MAX_BODY_BYTES = 16 * 1024      # an authorize body with every field at its limit and \\u-escaped is < 8 KB
MAX_BYTES = {"account": 128, "destination": 64, "call_id": 256, "caller_id": 128}
MAX_INT_DIGITS = 64             # longer digit runs become TooLong: no accepted field needs more
MAX_API_KEY_BYTES = 256
_PADDING = " \t\r\n"


class BadRequest(Exception):
    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


class TooLong:
    """A JSON integer with more digits than any field accepts, kept unconverted."""
    __slots__ = ("digits",)

    def __init__(self, digits: str):
        self.digits = digits


class _Duplicate(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _int(digits: str):
    return int(digits) if len(digits.lstrip("-")) <= MAX_INT_DIGITS else TooLong(digits)


def _constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _object(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def parse_body(raw) -> dict:
    """The request body as a JSON object (numbers: Decimal or int, never float)."""
    if raw is None:
        raw = b""
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("body", "must be UTF-8 JSON") from None
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("body", f"must be at most {MAX_BODY_BYTES} bytes", status=413)
    try:
        text = bytes(raw).decode("utf-8")
        data = json.loads(text, parse_float=Decimal, parse_int=_int, parse_constant=_constant,
                          object_pairs_hook=_object)
    except _Duplicate as exc:
        raise BadRequest(_field_name(exc.key), "appears twice in the body") from None
    except RecursionError:
        raise BadRequest("body", "is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):     # JSONDecodeError is a ValueError
        raise BadRequest("body", "must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("body", "must be a JSON object")
    return data


def _field_name(key: str) -> str:
    return key if key in MAX_BYTES or key in ("billsec", "disposition", "direction") else "body"


def clean_text(field: str, value, required: bool = True) -> Optional[str]:
    """The single normalisation of a text field (see the module docstring)."""
    if value is None and not required:
        return None
    if isinstance(value, TooLong):
        raise BadRequest(field, f"must be at most {MAX_BYTES[field]} bytes")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)   # switches often send digits as numbers
    if not isinstance(value, str) or not value.strip(_PADDING):
        raise BadRequest(field, "is required and must be a non-empty string")
    value = value.strip(_PADDING)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest(field, "must be valid Unicode (no lone surrogates)") from None
    if size > MAX_BYTES[field]:
        raise BadRequest(field, f"must be at most {MAX_BYTES[field]} bytes in UTF-8")
    if any(_is_control(c) for c in value):
        raise BadRequest(field, "must not contain control characters")
    return value


def _is_control(c: str) -> bool:
    code = ord(c)
    return code < 0x20 or 0x7F <= code < 0xA0 or c in "\u2028\u2029"


def whole_seconds(field: str, value, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise BadRequest(field, f"must be a whole number of seconds from 0 to {maximum}")
    return value


def api_key(headers: Optional[Mapping]) -> Optional[str]:
    """The X-Api-Key header, or None when it is missing or cannot be a key (the caller answers 401)."""
    if not isinstance(headers, Mapping):
        return None
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == "x-api-key":
            if not isinstance(value, str) or not value:
                return None
            try:
                if len(value.encode("utf-8")) > MAX_API_KEY_BYTES:
                    return None
            except UnicodeEncodeError:
                return None
            return value
    return None
