"""Rate decks in S3: a presigned upload for a deck too large for a request, the background import
reading it line by line, and exports too large for an answer.

The bucket is ``CASCADE_DECK_BUCKET`` (infra/ creates it, private, objects expiring after 2 days); locally
and in tests it is created on first use in moto. Keys: ``imports/<import id>.csv`` and
``exports/<random>.csv``.
"""
import os
import secrets
import tempfile
from typing import Iterable, Iterator, Optional

MAX_UPLOAD_BYTES = 200 * 1024 * 1024     # a 100,000-row deck is about 8 MB
URL_SECONDS = 900


def bucket() -> str:
    return os.environ.get("CASCADE_DECK_BUCKET") or os.environ.get("CASCADE_TABLE_PREFIX", "cascade-dev-") + "decks"


_client = None


def _s3():
    global _client
    if _client is None:
        import boto3
        from botocore.config import Config
        _client = boto3.client("s3", config=Config(signature_version="s3v4"))
        if not os.environ.get("CASCADE_DECK_BUCKET"):      # local and tests: moto, made on first use
            try:
                _client.create_bucket(Bucket=bucket())
            except _client.exceptions.BucketAlreadyOwnedByYou:
                pass
    return _client


def reset() -> None:
    """Forget the client (tests start a fresh moto per test)."""
    global _client
    _client = None


def import_key(import_id: str) -> str:
    return f"imports/{import_id}.csv"


def upload_form(import_id: str) -> dict:
    """A presigned POST (multipart form) for one deck: at most MAX_UPLOAD_BYTES, for URL_SECONDS."""
    post = _s3().generate_presigned_post(
        bucket(), import_key(import_id), Fields={"Content-Type": "text/csv"},
        Conditions=[{"Content-Type": "text/csv"}, ["content-length-range", 1, MAX_UPLOAD_BYTES]],
        ExpiresIn=URL_SECONDS)
    return {"url": post["url"], "fields": post["fields"], "expires_in": URL_SECONDS, "max_bytes": MAX_UPLOAD_BYTES}


def uploaded(import_id: str) -> Optional[int]:
    """The uploaded deck's size, or None when nothing was uploaded."""
    s3 = _s3()
    try:
        return int(s3.head_object(Bucket=bucket(), Key=import_key(import_id))["ContentLength"])
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def deck_lines(import_id: str) -> Iterator[str]:
    """The uploaded deck, line by line as it streams from S3 (never read whole)."""
    body = _s3().get_object(Bucket=bucket(), Key=import_key(import_id))["Body"]
    try:
        for raw in body.iter_lines(chunk_size=64 * 1024, keepends=True):
            yield raw.decode("utf-8")
    finally:
        body.close()


def put_export(lines: Iterable[str], filename: str) -> str:
    """Write an export through a spooled file (memory up to 8 MB, then disk) and answer a presigned GET."""
    key = f"exports/{secrets.token_hex(12)}.csv"
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        for line in lines:
            spool.write(line.encode("utf-8"))
        spool.seek(0)
        _s3().upload_fileobj(spool, bucket(), key, ExtraArgs={
            "ContentType": "text/csv; charset=utf-8", "ContentDisposition": f'attachment; filename="{filename}"'})
    return _s3().generate_presigned_url("get_object", Params={"Bucket": bucket(), "Key": key}, ExpiresIn=URL_SECONDS)


class _LineReader:
    """A file-like view of an iterator of text lines, read in chunks by boto3's multipart upload: the
    whole file is never held (each part is 8 MB)."""

    def __init__(self, lines: Iterable[str]):
        self._lines, self._buffer = iter(lines), b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._lines).encode("utf-8")
            except StopIteration:
                break
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def put_stream(lines: Iterable[str], key: str, filename: str) -> None:
    """Upload a CSV as it is produced (multipart, 8 MB parts)."""
    _s3().upload_fileobj(_LineReader(lines), bucket(), key, ExtraArgs={
        "ContentType": "text/csv; charset=utf-8", "ContentDisposition": f'attachment; filename="{filename}"'})


def download_url(key: str) -> str:
    return _s3().generate_presigned_url("get_object", Params={"Bucket": bucket(), "Key": key}, ExpiresIn=URL_SECONDS)


class S3Decks:
    """The services' port onto this module (bootstrap.Container.decks)."""
    upload_form = staticmethod(upload_form)
    uploaded = staticmethod(uploaded)
    deck_lines = staticmethod(deck_lines)
    put_export = staticmethod(put_export)
    put_stream = staticmethod(put_stream)
    download_url = staticmethod(download_url)
