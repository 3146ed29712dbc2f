"""Who may act on which account: roles, the materialised path and the one wall check.

Every account carries ``path``: the ids from the root down to itself joined by "/" (the root's path is
its own id). An account lies in a principal's subtree exactly when its path is the principal's path or
starts with it plus "/": one string comparison, no walk up the tree. Ids never contain "/".
"""
from dataclasses import dataclass
from typing import Optional

from .accounts import (ADMIN, CLIENT, CREATE_CLIENTS, CREATE_NOTHING, CREATE_RESELLERS,  # noqa: F401
                       CREATE_RIGHTS, RESELLER)

SEPARATOR = "/"


def child_path(parent_path: str, child_id: str) -> str:
    if SEPARATOR in child_id:
        raise ValueError("an account id cannot contain '/'")
    return parent_path + SEPARATOR + child_id


def depth_of(path: str) -> int:
    """0 for the root, 1 for its children..."""
    return path.count(SEPARATOR)


def within(path: str, ancestor_path: str) -> bool:
    """True when ``path`` is ``ancestor_path`` itself or lies below it."""
    return path == ancestor_path or path.startswith(ancestor_path + SEPARATOR)


@dataclass(frozen=True)
class Principal:
    """Who is calling the portal: an account, its role and its place in the tree, as of this request."""
    account_id: str
    role: str
    path: str
    via: str = "token"          # "token" (a signed-in person) or "api_key" (a reseller's machine access)
    status: str = "active"      # the account's status as read for this request (suspended: read only)

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def sees(self, target_path: Optional[str]) -> bool:
        """The wall: a principal sees itself and, unless it is a client, its whole subtree."""
        if not target_path:
            return False
        if self.role == CLIENT:
            return target_path == self.path
        return within(target_path, self.path)

    def manages(self, target_path: Optional[str]) -> bool:
        """Acting on an account's money or settings is for its ancestors (the admin included), not the
        account itself: a reseller cannot top itself up or raise its own credit limit."""
        return bool(target_path) and self.role in (ADMIN, RESELLER) and target_path != self.path \
            and within(target_path, self.path)
