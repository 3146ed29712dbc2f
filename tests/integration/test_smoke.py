import json
from chalice.test import Client
from tests.conftest import DEMO_KEY

def test_smoke(demo):
    from app import app
    with Client(app) as c:
        r = c.http.post("/authorize", headers={"X-Api-Key": DEMO_KEY, "Content-Type": "application/json"},
                        body=json.dumps({"account": "1001", "destination": "15551230001", "call_id": "a@b"}))
        print(r.status_code, r.body)
        assert r.status_code == 200
        r = c.http.post("/calls/a%40b/complete", headers={"X-Api-Key": DEMO_KEY, "Content-Type": "application/json"},
                        body=json.dumps({"billsec": 60, "disposition": "ANSWERED"}))
        print(r.status_code, r.body)
        assert r.status_code == 200
