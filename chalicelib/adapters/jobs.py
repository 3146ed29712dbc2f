"""Starting a background task (a deck import, a CDR export): the importer Lambda, invoked asynchronously (Lambda retries a failed run
twice; the task is idempotent), or, where there is no Lambda (``make run``, tests), a thread of this
process. ``CASCADE_IMPORTS_INLINE=1`` runs it before the request returns (tests that read the outcome)."""
import json
import logging
import os
import threading

log = logging.getLogger("cascade.jobs")


def start_import(import_id: str) -> None:
    _start({"import_id": import_id}, f"import-{import_id}")


def start_export(export_id: str) -> None:
    _start({"export_id": export_id}, f"export-{export_id}")


def _start(event: dict, name: str) -> None:
    function = os.environ.get("CASCADE_IMPORTER_FUNCTION")
    if function:
        import boto3
        boto3.client("lambda").invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps(event).encode())
        return
    from chalicelib.entrypoints.importer import handle
    if os.environ.get("CASCADE_IMPORTS_INLINE") == "1":
        handle(event)
        return
    threading.Thread(target=handle, args=(event,), name=name, daemon=True).start()
