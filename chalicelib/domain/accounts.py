"""The account tree: operator (admin) root -> resellers (any depth up to the tree's max) -> clients.

Every account except the root holds a balance with its parent; a call debits every level at the tariff
its parent assigned it. ``available`` (what the level may still spend) is balance, plus the credit limit
for postpaid accounts, minus money held for calls in progress. The store keeps ``available`` as an
attribute of its own because DynamoDB conditions cannot do arithmetic.
"""
from dataclasses import dataclass, field
from decimal import Decimal
from typing import List, Optional, Sequence

from .money import ZERO
from .numbers import DialPlan

ADMIN, RESELLER, CLIENT = "admin", "reseller", "client"
ROLES = (ADMIN, RESELLER, CLIENT)
ACTIVE, SUSPENDED, CLOSED = "active", "suspended", "closed"
STATUSES = (ACTIVE, SUSPENDED, CLOSED)
PREPAID, PREPAID_SOFT, POSTPAID = "prepaid", "prepaid_soft", "postpaid"
BILLING_TYPES = (PREPAID, PREPAID_SOFT, POSTPAID)
EARLY, LATE = "early", "late"
BILLING_MODES = (EARLY, LATE)
MARGIN, COMMISSION = "margin", "commission"
RESELLER_MODELS = (MARGIN, COMMISSION)


# What an account may create below itself, set by its parent (VoipSwitch's reseller levels I/II/III).
CREATE_NOTHING, CREATE_CLIENTS, CREATE_RESELLERS = "nothing", "clients", "clients_and_resellers"
CREATE_RIGHTS = (CREATE_NOTHING, CREATE_CLIENTS, CREATE_RESELLERS)


class InvalidTree(ValueError):
    pass


class InvalidAccount(ValueError):
    """An account the rules refuse; ``field`` names the offending attribute."""
    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name} {message}")
        self.field = field_name


@dataclass(frozen=True)
class TreeSettings:
    """Per-tree settings, kept on the root account."""
    max_depth: int = 5                  # reseller levels between the root and a client
    max_duration: int = 3 * 3600        # cap on any authorized call, seconds
    # A hold unreleased this long after its granted time is swept. One hour: the Kamailio integration
    # retries a completion after 1, 2, 4, 8, 16 s and then every minute, so this covers its reports
    # through a Cascade outage of about an hour; a shorter grace turns more of them into late bills
    # (billed all the same, possibly below a floor), a longer one keeps a lost call's money held longer.
    hold_grace: int = 3600
    billing_mode: str = EARLY           # default for accounts that set none
    dial_plan: DialPlan = field(default_factory=DialPlan)

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "TreeSettings":
        data = data or {}
        return cls(
            max_depth=int(data.get("max_depth", 5)),
            max_duration=int(data.get("max_duration", 3 * 3600)),
            hold_grace=int(data.get("hold_grace", 3600)),
            billing_mode=data.get("billing_mode", EARLY),
            dial_plan=DialPlan.from_dict(data.get("dial_plan")),
        )


@dataclass(frozen=True)
class Account:
    id: str
    role: str
    parent_id: Optional[str]
    tariff_id: Optional[str]            # assigned by the parent; the root's is its provider cost tariff
    name: str = ""
    status: str = ACTIVE
    billing_type: str = PREPAID
    billing_mode: Optional[str] = None  # None: inherit from the nearest ancestor, then the tree
    balance: Decimal = ZERO
    credit_limit: Decimal = ZERO
    held: Decimal = ZERO
    active_calls: int = 0
    max_calls: Optional[int] = None
    cps_limit: Optional[int] = None
    daily_limit: Optional[Decimal] = None
    monthly_limit: Optional[Decimal] = None
    allow_loss: bool = False
    reseller_model: str = MARGIN
    commission_percent: Decimal = ZERO
    currency: str = "USD"
    settings: Optional[TreeSettings] = None   # root only
    # The portal's view (the switch path reads none of these)
    path: str = ""                      # materialised path root/.../id (domain.access)
    email: Optional[str] = None
    timezone: str = "UTC"
    billing_day: int = 1
    low_balance: Optional[Decimal] = None
    may_create: str = "nothing"         # domain.access.CREATE_RIGHTS, set by the parent
    created_at: str = ""
    closed_at: Optional[str] = None
    # Escrow slots ancestors keep on a client's item (domain.escrow.Slot); empty for resellers
    escrow: tuple = ()
    # Usage counters of a level with a CPS or spend limit (domain.counters.Counter), as read
    counters: tuple = ()
    cps_lent: int = 0                   # CPS shares lent to escrow slots (domain.escrow)

    @property
    def available(self) -> Decimal:
        credit = self.credit_limit if self.billing_type == POSTPAID else ZERO
        return self.balance + credit - self.held

    @property
    def floor(self) -> Optional[Decimal]:
        """Lowest balance allowed; None for soft prepaid, which may go negative."""
        if self.billing_type == PREPAID_SOFT:
            return None
        return -self.credit_limit if self.billing_type == POSTPAID else ZERO

    @property
    def shortfall(self) -> Decimal:
        """How far the account is below its floor (what it may spend is negative), 0 when it is not or
        has no floor. Only a debit no hold guarded gets here: a late completion, an over_max billsec,
        late billing with calls in parallel. Until it is paid back, every call is refused
        (insufficient_funds): nothing is available."""
        if self.floor is None:
            return ZERO
        return max(ZERO, -self.available)

    @property
    def is_commission_reseller(self) -> bool:
        return self.role == RESELLER and self.reseller_model == COMMISSION


Chain = Sequence[Account]   # the caller's client first, the root last


def reseller_levels(path: str, role: str) -> int:
    """How many reseller levels stand between the root and this account, counting itself if it is a
    reseller: the tree's ``max_depth`` bounds this."""
    depth = path.count("/")
    return depth if role == RESELLER else max(0, depth - 1)


def check_account(account: Account, parent: Optional[Account], settings: Optional[TreeSettings] = None) -> None:
    """The rules every account obeys, whoever creates it (the seed loader, the portal). Raises
    InvalidAccount naming the field."""
    if account.role not in ROLES:
        raise InvalidAccount("role", f"must be one of {', '.join(ROLES)}")
    if not account.id or "/" in account.id or "#" in account.id:
        raise InvalidAccount("id", "must be non-empty without '/' or '#'")
    if account.role == ADMIN:
        if parent is not None or account.parent_id is not None:
            raise InvalidAccount("parent", "the admin is the root and has no parent")
    else:
        if parent is None or account.parent_id != parent.id:
            raise InvalidAccount("parent", "is required")
        if parent.role == CLIENT:
            raise InvalidAccount("parent", "a client cannot have accounts below it")
        if account.currency != parent.currency:
            raise InvalidAccount("currency", f"must be the tree's currency {parent.currency}")
    for name, choices in (("status", STATUSES), ("billing_type", BILLING_TYPES),
                          ("reseller_model", RESELLER_MODELS), ("may_create", CREATE_RIGHTS)):
        if getattr(account, name) not in choices:
            raise InvalidAccount(name, f"must be one of {', '.join(choices)}")
    if account.billing_mode is not None and account.billing_mode not in BILLING_MODES:
        raise InvalidAccount("billing_mode", f"must be one of {', '.join(BILLING_MODES)}")
    if account.role == CLIENT and account.may_create != CREATE_NOTHING:
        raise InvalidAccount("may_create", "a client cannot create accounts")
    if not ZERO <= account.commission_percent < 100:
        raise InvalidAccount("commission_percent", "must be at least 0 and below 100")
    if account.credit_limit < ZERO:
        raise InvalidAccount("credit_limit", "must be >= 0")
    for name in ("max_calls", "cps_limit"):
        value = getattr(account, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidAccount(name, "must be a whole number >= 0")
    for name in ("daily_limit", "monthly_limit", "low_balance"):
        value = getattr(account, name)
        if value is not None and value < ZERO:
            raise InvalidAccount(name, "must be >= 0")
    if isinstance(account.billing_day, bool) or not isinstance(account.billing_day, int) \
            or not 1 <= account.billing_day <= 31:
        raise InvalidAccount("billing_day", "must be a whole number from 1 to 31")
    if settings is not None and account.path:
        levels = reseller_levels(account.path, account.role)
        if levels > settings.max_depth:
            raise InvalidAccount("role", f"{levels} reseller levels exceed the tree's max depth {settings.max_depth}")


def check_tree(accounts: Sequence[Account]) -> None:
    """Rules of a whole tree (the seed): exactly one admin, one currency."""
    if len([a for a in accounts if a.role == ADMIN]) != 1:
        raise InvalidAccount("accounts", "exactly one admin (the root) is required")
    if len({a.currency for a in accounts}) > 1:
        raise InvalidAccount("accounts", "one currency per tree")


def check_chain(chain: Chain) -> TreeSettings:
    """Validate a client-to-root chain and return the tree's settings."""
    if len(chain) < 2:
        raise InvalidTree("a chain needs a client and a root")
    for child, parent in zip(chain, chain[1:]):
        if child.parent_id != parent.id:
            raise InvalidTree(f"{child.id} is not a child of {parent.id}")
    root = chain[-1]
    if root.role != ADMIN or root.parent_id is not None:
        raise InvalidTree(f"{root.id} is not a root")
    if chain[0].role != CLIENT:
        raise InvalidTree(f"{chain[0].id} is not a client")
    if any(a.role != RESELLER for a in chain[1:-1]):
        raise InvalidTree("only resellers stand between a client and the root")
    settings = root.settings or TreeSettings()
    if len(chain) - 2 > settings.max_depth:
        raise InvalidTree(f"{len(chain) - 2} reseller levels exceed the tree's max depth {settings.max_depth}")
    return settings


def effective_tariff_ids(chain: Chain) -> List[Optional[str]]:
    """The tariff each level is charged at: under a commission reseller an account pays its parent's
    own tariff (the commission reseller sets no prices)."""
    result: List[Optional[str]] = [None] * len(chain)
    result[-1] = chain[-1].tariff_id
    for i in range(len(chain) - 2, -1, -1):
        parent = chain[i + 1]
        result[i] = result[i + 1] if parent.is_commission_reseller else chain[i].tariff_id
    return result


def billing_modes(chain: Chain, settings: TreeSettings) -> List[str]:
    modes: List[str] = []
    for i in range(len(chain)):
        mode = next((a.billing_mode for a in chain[i:] if a.billing_mode), settings.billing_mode)
        modes.append(mode)
    return modes
