"""Large rate decks: a presigned S3 upload, a background import with progress, and exports too large for
an answer (a 303 to S3). Over moto, with the background task run before the request returns."""
import time

import requests

from tests.integration.helpers import client  # noqa: F401
from tests.integration.portal_helpers import Portal, table_snapshot

NEXT_YEAR = time.strftime("%Y", time.gmtime(time.time() + 366 * 86400)) + "-01-01T00:00:00Z"


def upload(opened: dict, deck: bytes) -> int:
    form = opened["upload"]
    return requests.post(form["url"], data=form["fields"], files={"file": ("deck.csv", deck, "text/csv")}).status_code


def deck_of(n: int) -> bytes:
    rows = "".join(f"44{i:06d},UK {i},0.{i % 97 + 1:03d}\n" for i in range(n))
    return ("prefix,name,price\n" + rows).encode()


def test_a_large_deck_goes_through_s3_and_a_background_task_with_progress(client, demo):
    portal = Portal(client)
    tid = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs", {"name": "Big"}, status=201)["id"]
    # GIVEN an import opened for it: an upload form that expires, nothing started
    opened = portal.ok("cumulus", "POST", f"/accounts/cumulus/tariffs/{tid}/imports", {"mode": "merge"}, status=201)
    assert opened["status"] == "awaiting_upload" and opened["upload"]["expires_in"] == 900
    # starting before the upload is refused
    status, body = portal("cumulus", "POST", f"/accounts/cumulus/tariffs/{tid}/imports/{opened['id']}/start")
    assert (status, body["error"]) == (409, "deck_not_uploaded")
    # WHEN 12,000 rows are uploaded to S3 and the import started
    assert upload(opened, deck_of(12_000)) in (200, 201, 204)
    started = portal.ok("cumulus", "POST", f"/accounts/cumulus/tariffs/{tid}/imports/{opened['id']}/start", status=202)
    # THEN (the task ran) it is done, with every row read and the change it made
    job = portal.ok("cumulus", "GET", f"/accounts/cumulus/tariffs/{tid}/imports/{opened['id']}")
    assert started["id"] == job["id"] and job["status"] == "done", job
    assert job["rows_read"] == 12_001 and job["result"]["added"] == 12_000
    assert job["transactions_written"] == job["transactions"] >= 1
    response = client.http.get(f"/accounts/cumulus/tariffs/{tid}/deck", headers=portal.headers("cumulus"))
    rows = response.body.decode().splitlines()
    assert len(rows) == 12_001 and rows[6].split(",")[:3] == ["44000005", "UK 5", "0.006000"]
    # AND starting it again changes nothing; its ancestors see it, an outsider does not
    assert portal.ok("cumulus", "POST", f"/accounts/cumulus/tariffs/{tid}/imports/{opened['id']}/start",
                     status=202)["status"] == "done"
    assert portal.ok("borealis", "GET", f"/accounts/cumulus/tariffs/{tid}/imports/{opened['id']}")["id"] == job["id"]
    assert portal("delta", "GET", f"/accounts/cumulus/tariffs/{tid}/imports/{opened['id']}")[0] == 404
    status, body = portal("cumulus", "GET", f"/accounts/cumulus/tariffs/{tid}/imports/imp_nope")
    assert (status, body) == (404, {"error": "not_found", "message": "no such import"})


def test_a_bad_deck_in_s3_fails_the_import_with_its_lines_and_applies_nothing(client, demo):
    portal = Portal(client)
    opened = portal.ok("cumulus", "POST", "/accounts/cumulus/tariffs/cumulus-retail/imports",
                       {"effective_from": NEXT_YEAR}, status=201)
    assert upload(opened, b"prefix,price\n1,0.02\n2x,0.5\n3,\n") in (200, 201, 204)
    before = [k for k in table_snapshot() if k[0].startswith("TRF#")]
    portal.ok("cumulus", "POST", f"/accounts/cumulus/tariffs/cumulus-retail/imports/{opened['id']}/start", status=202)
    job = portal.ok("cumulus", "GET", f"/accounts/cumulus/tariffs/cumulus-retail/imports/{opened['id']}")
    assert job["status"] == "failed" and job["result"]["error"] == "invalid_deck"
    assert [(e["line"], e["field"]) for e in job["result"]["errors"]] == [(3, "prefix"), (4, "price")]
    assert [k for k in table_snapshot() if k[0].startswith("TRF#")] == before


def test_an_export_too_large_for_an_answer_is_a_redirect_to_s3(client, demo, monkeypatch):
    from chalicelib.entrypoints import portal as portal_module
    monkeypatch.setattr(portal_module, "MAX_CSV_ANSWER", 200)
    portal = Portal(client)
    response = client.http.get("/accounts/cumulus/tariffs/cumulus-retail/deck", headers=portal.headers("cumulus"))
    assert response.status_code == 303
    got = requests.get(response.headers["Location"])
    assert got.status_code == 200 and got.text.splitlines()[0].startswith("prefix,name,price")
    assert len(got.text.splitlines()) == 5
    monkeypatch.setattr(portal_module, "MAX_CSV_ANSWER", 5 * 1024 * 1024)
    small = client.http.get("/accounts/cumulus/tariffs/cumulus-retail/deck", headers=portal.headers("cumulus"))
    assert small.status_code == 200 and small.body.decode() == got.text
