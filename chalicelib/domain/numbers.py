"""Dialled digits -> E.164 digits (no '+'), the form every tariff prefix is written in.

The rule, in order (documented in docs/switch-api.md):
1. Drop visual separators (spaces, '-', '.', '(', ')').
2. A leading '+' means the rest is already international.
3. A leading international access code of the tree's dial plan is stripped (default '00' and, for
   country code 1 only, '011').
4. Otherwise a leading national (trunk) prefix, when the plan has one (e.g. '0'), is replaced by the
   plan's country code.
5. Otherwise a number of exactly the plan's national length gets the country code in front
   (default plan: country code 1 and 10 digits, so '5551230001' -> '15551230001').
6. Anything else is taken as already international ('15551230001', '441632960961').
"""
from dataclasses import dataclass
from typing import Optional, Tuple

MAX_DIGITS = 15  # ITU-T E.164
_SEPARATORS = str.maketrans("", "", " -.()")


class InvalidNumber(ValueError):
    pass


@dataclass(frozen=True)
class DialPlan:
    country_code: str = "1"
    international_prefixes: Tuple[str, ...] = ("00", "011")
    national_prefix: str = ""
    national_length: Optional[int] = 10

    def to_dict(self) -> dict:
        return {"country_code": self.country_code, "international_prefixes": list(self.international_prefixes),
                "national_prefix": self.national_prefix, "national_length": self.national_length}

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "DialPlan":
        if not data:
            return cls()
        country_code = str(data.get("country_code", "1"))
        return cls(
            country_code=country_code,
            international_prefixes=tuple(data.get("international_prefixes", _default_exits(country_code))),
            national_prefix=str(data.get("national_prefix", "")),
            national_length=data.get("national_length", 10),
        )


def _default_exits(country_code: str) -> Tuple[str, ...]:
    # '011' is the exit code only in the NANP; elsewhere it can begin a national number (UK 0113...).
    return ("00", "011") if country_code == "1" else ("00",)


def normalize(dialled: str, plan: DialPlan = DialPlan()) -> str:
    text = str(dialled).strip().translate(_SEPARATORS)
    if text.startswith("+"):
        digits = text[1:]
    else:
        digits = text
        for access in sorted(plan.international_prefixes, key=len, reverse=True):
            if access and digits.startswith(access):
                digits = digits[len(access):]
                break
        else:
            if plan.national_prefix and digits.startswith(plan.national_prefix):
                digits = plan.country_code + digits[len(plan.national_prefix):]
            elif plan.national_length and len(digits) == plan.national_length:
                digits = plan.country_code + digits
    if not digits.isdigit() or not digits.isascii():
        raise InvalidNumber(f"{dialled!r} is not a dialable number")
    if len(digits) > MAX_DIGITS:
        raise InvalidNumber(f"{dialled!r} has more than {MAX_DIGITS} digits")
    return digits
