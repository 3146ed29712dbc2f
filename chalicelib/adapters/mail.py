"""Mail through Amazon SES (``send_email``), sender ``CASCADE_MAIL_FROM``.

SES only sends from a verified identity. On AWS that is set up once, out of band (infra verifies the
domain); the code must never call ``verify_email_identity`` there (it would mail a confirmation link to
the sender address on every cold start). moto (the local stack and the tests) refuses unverified
senders too, so there ``ensure_sender_verified`` verifies the sender before each send: it runs only
when ``verify_sender`` is true, which ``from_env`` sets when ``AWS_ENDPOINT_URL`` points the SDK at a
local endpoint or ``CASCADE_MAIL_VERIFY_SENDER=1`` (in-process moto in tests, where no endpoint is set).
Before each send, not once: moto's state is reset between tests while this object may be cached.
"""
import os
import threading

DEFAULT_FROM = "no-reply@cascade.local"


class SesMailer:
    def __init__(self, sender: str = DEFAULT_FROM, verify_sender: bool = False, region: str = None):
        self.sender, self.verify_sender, self.region = sender, verify_sender, region
        self._client = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> "SesMailer":
        verify = bool(os.environ.get("AWS_ENDPOINT_URL")) or os.environ.get("CASCADE_MAIL_VERIFY_SENDER") == "1"
        return cls(os.environ.get("CASCADE_MAIL_FROM") or DEFAULT_FROM, verify_sender=verify,
                   region=os.environ.get("CASCADE_MAIL_REGION") or os.environ.get("AWS_REGION"))

    def client(self):
        with self._lock:
            if self._client is None:
                import boto3   # loaded on the first mail only; sign-in and token checks never need it
                self._client = boto3.client("ses", region_name=self.region)
            return self._client

    def ensure_sender_verified(self) -> None:
        if self.verify_sender:
            self.client().verify_email_identity(EmailAddress=self.sender)

    def send(self, to: str, subject: str, text: str) -> None:
        self.ensure_sender_verified()
        self.client().send_email(
            Source=self.sender, Destination={"ToAddresses": [to]},
            Message={"Subject": {"Data": subject, "Charset": "UTF-8"},
                     "Body": {"Text": {"Data": text, "Charset": "UTF-8"}}})
