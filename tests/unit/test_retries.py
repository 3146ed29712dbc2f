"""Transaction conflicts and throttling are retried, bounded; anything else is not."""
import pytest
from pynamodb.exceptions import TransactWriteError, VerboseClientError
from pynamodb.exceptions import CancellationReason

from chalicelib.adapters.dynamo import writes as store


def cancelled(*codes):
    cause = VerboseClientError({"Error": {"Code": "TransactionCanceledException", "Message": "x"}},
                               "TransactWriteItems",
                               cancellation_reasons=[CancellationReason(code=c) if c else None for c in codes])
    return TransactWriteError("cancelled", cause=cause)


def flaky(failures):
    calls = []

    def operation():
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return "done"
    return operation, calls


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(store.time, "sleep", lambda seconds: None)


def test_given_two_conflicts_when_retrying_then_the_third_attempt_commits():
    operation, calls = flaky([cancelled(None, "TransactionConflict"), cancelled("TransactionConflict")])
    assert store.with_retries(operation, "test") == "done"
    assert len(calls) == 3


def test_given_a_failed_condition_when_retrying_then_it_is_not_retried():
    operation, calls = flaky([cancelled("ConditionalCheckFailed", None)])
    with pytest.raises(TransactWriteError):
        store.with_retries(operation, "test")
    assert len(calls) == 1


def test_given_endless_conflicts_when_retrying_then_it_gives_up_after_the_budget():
    operation, calls = flaky([cancelled("TransactionConflict")] * 50)
    with pytest.raises(TransactWriteError):
        store.with_retries(operation, "test", attempts=6)
    assert len(calls) == 6


def test_backoff_is_capped_and_jittered(monkeypatch):
    slept = []
    monkeypatch.setattr(store.time, "sleep", slept.append)
    operation, _ = flaky([cancelled("TransactionConflict")] * 5)
    store.with_retries(operation, "test", attempts=6, base=0.02, cap=0.1)
    assert len(slept) == 5 and all(0 <= s <= 0.1 for s in slept)
