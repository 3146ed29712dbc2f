"""Starting a background task: the importer Lambda, invoked asynchronously (Lambda retries a failed run
twice; the task is idempotent), or, where there is no Lambda (``make run``, tests), a thread of this
process. ``CASCADE_IMPORTS_INLINE=1`` runs it before the request returns (tests that read the outcome)."""
import json
import logging
import os
import threading

log = logging.getLogger("cascade.jobs")


def start_import(import_id: str) -> None:
    function = os.environ.get("CASCADE_IMPORTER_FUNCTION")
    if function:
        import boto3
        boto3.client("lambda").invoke(FunctionName=function, InvocationType="Event",
                                      Payload=json.dumps({"import_id": import_id}).encode())
        return
    from chalicelib.entrypoints.importer import run
    if os.environ.get("CASCADE_IMPORTS_INLINE") == "1":
        run(import_id)
        return
    threading.Thread(target=run, args=(import_id,), name=f"import-{import_id}", daemon=True).start()
