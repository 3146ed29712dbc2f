"""Print the mails that moto's SES holds for the local stack (`make run`): reset and set-password links.

moto in server mode exposes its in-memory state at ``GET /moto-api/data.json``: every tracked model
instance by service and class, so the mails are ``["ses"]["Message"]`` (send_email) and
``["ses"]["RawMessage"]`` (send_raw_email), in the order they were sent. This is moto's internal
dashboard API, not AWS's; its shape may change between moto versions (checked with moto 5.2.5).

    python scripts/read_mail.py                 # every mail
    python scripts/read_mail.py --to a@b.c      # mails to one address
    python scripts/read_mail.py --last --links  # only the reset/set-password link of the newest mail

The moto server is at AWS_ENDPOINT_URL (default http://127.0.0.1:8766).
"""
import argparse
import json
import os
import re
import sys
import urllib.request

LINK = re.compile(r"https?://\S+/reset-password\?token=[A-Za-z0-9_\-]+")


def messages(endpoint: str) -> list:
    with urllib.request.urlopen(endpoint.rstrip("/") + "/moto-api/data.json", timeout=10) as response:
        state = json.load(response)
    ses = state.get("ses", {})
    out = []
    for m in ses.get("Message", []):
        to = [a for kind in ("ToAddresses", "CcAddresses", "BccAddresses")
              for a in (m.get("destinations") or {}).get(kind, [])]
        out.append({"id": m.get("id"), "from": m.get("source"), "to": to, "subject": m.get("subject"),
                    "body": m.get("body")})
    for m in ses.get("RawMessage", []):
        out.append({"id": m.get("id"), "from": m.get("source"), "to": m.get("destinations") or [],
                    "subject": None, "body": m.get("raw_data")})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL") or "http://127.0.0.1:8766")
    parser.add_argument("--to", help="only mails to this address (case-insensitive)")
    parser.add_argument("--last", action="store_true", help="only the newest matching mail")
    parser.add_argument("--links", action="store_true", help="print only the reset/set-password links")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        found = messages(args.endpoint)
    except OSError as exc:
        print(f"cannot read {args.endpoint}/moto-api/data.json: {exc}", file=sys.stderr)
        return 1
    if args.to:
        found = [m for m in found if args.to.lower() in (a.lower() for a in m["to"])]
    if args.last:
        found = found[-1:]
    if args.links:
        for m in found:
            for link in LINK.findall(m["body"] or ""):
                print(link)
    elif args.json:
        print(json.dumps(found, indent=2))
    else:
        for m in found:
            print(f"From: {m['from']}\nTo: {', '.join(m['to'])}\nSubject: {m['subject']}\n\n{m['body']}\n{'-' * 60}")
        if not found:
            print("no mail", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
