"""The background tasks: applying a large rate deck uploaded to S3 (services.portal_tariffs.run_import) and
writing a CDR export to S3 (services.portal_reports.run_cdr_export).

Deployed as its own Lambda (``importer``), invoked asynchronously by the portal with {"import_id": ...} or
{"export_id": ...}; Lambda retries a failed run twice, and a run is idempotent. Where there is no Lambda,
adapters.jobs runs ``handle`` in a thread."""
from chalice import Blueprint

importer_bp = Blueprint(__name__)


def importer_portal():
    """The portal's use cases without sign-in (this function has neither the token key nor mail)."""
    from chalicelib.bootstrap import container
    from chalicelib.services.portal import Portal
    c = container()
    return Portal(c.store, None, c.clock, c.decks, c.jobs)


def run(import_id: str):
    return importer_portal().run_import(import_id)


def export(export_id: str):
    from .cdr_csv import csv_lines
    return importer_portal().run_cdr_export(export_id, csv_lines)


def handle(event: dict) -> dict:
    event = event or {}
    if event.get("export_id"):
        job = export(str(event["export_id"]))
        return {"export_id": job.id, "status": job.status} if job else {"status": "unknown"}
    job = run(str(event.get("import_id", "")))
    return {"import_id": job.id, "status": job.status} if job else {"status": "unknown"}


@importer_bp.lambda_function(name="importer")
def importer(event, context):
    return handle(event if isinstance(event, dict) else {})
