"""The composition root: the one place that builds the adapters and hands them to the services.

Every entrypoint (the switch routes and function URL, the sweeper, the portal, scripts) asks
``container()`` for what it needs; tests may install their own with ``use()``. Adapters are built on
first use, never at import: the switch Lambda's cold start must not pay for botocore's client set-up
before its first request (tests/architecture/test_authorize_imports.py), nor for the portal's pieces
at all.
"""
import threading
import time
from typing import Callable, Optional

_lock = threading.Lock()


class Container:
    def __init__(self, store=None, identity=None, clock: Callable[[], float] = time.time):
        self._store, self._identity, self.clock = store, identity, clock

    @property
    def store(self):
        """The DynamoDB adapter (services.ports.SwitchStore, and the portal's reads and journal)."""
        if self._store is None:
            with _lock:
                if self._store is None:
                    from chalicelib.adapters.dynamo.store import DynamoStore
                    self._store = DynamoStore()
        return self._store

    @property
    def identity(self):
        """Sign-in, tokens and API keys (services.identity), with scrypt, PyJWT and SES behind it."""
        if self._identity is None:
            with _lock:
                if self._identity is None:
                    from chalicelib.adapters.identity_wiring import build_identity_service
                    self._identity = build_identity_service()
        return self._identity


    @property
    def decks(self):
        """Rate decks in S3 (adapters.decks): uploads, the background import's reads, large exports."""
        from chalicelib.adapters.decks import S3Decks
        return S3Decks()

    @property
    def jobs(self):
        """Background tasks (adapters.jobs): the importer Lambda, or a thread where there is none."""
        from chalicelib.adapters import jobs
        return jobs


_container: Optional[Container] = None


def container() -> Container:
    global _container
    if _container is None:
        _container = Container()
    return _container


def use(replacement: Optional[Container]) -> None:
    """Install another container (tests), or None to go back to the default on next use."""
    global _container
    _container = replacement
