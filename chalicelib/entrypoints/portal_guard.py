"""Who is calling the portal: ``principal_of(request)`` for every portal route, and the identity
service from the composition root (chalicelib.bootstrap: built on first use, never at import).

``principal_of`` reads ``Authorization: Bearer <access token>`` or ``X-Portal-Key: cpk_...`` and raises
``NotAuthenticated`` (answer 401 ``invalid_token``) when neither gives a live session or key. The
principal carries the account's CURRENT role and path (read on every request), not the token's.
"""
from chalicelib.domain.access import Principal
from chalicelib.domain.identity import NotAuthenticated  # noqa: F401 (re-exported for the portal)


def identity_service():
    """The process's identity service, from the composition root (tests install theirs with
    ``chalicelib.bootstrap.use(Container(identity=...))``)."""
    from chalicelib.bootstrap import container
    return container().identity


def principal_of(request) -> Principal:
    return identity_service().authenticate(getattr(request, "headers", None))


def source_ip(request) -> str:
    """API Gateway's view of the caller's address (X-Forwarded-For is the client's word, never used)."""
    context = getattr(request, "context", None) or {}
    identity = context.get("identity") if isinstance(context, dict) else None
    ip = identity.get("sourceIp") if isinstance(identity, dict) else None
    if isinstance(ip, str) and 0 < len(ip) <= 64 and all(c in "0123456789abcdefABCDEF.:" for c in ip):
        return ip
    return "unknown"
