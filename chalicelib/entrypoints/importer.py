"""The background task that applies a large rate deck uploaded to S3 (services.portal_tariffs.run_import).

Deployed as its own Lambda (``importer``), invoked asynchronously by the portal with {"import_id": ...};
Lambda retries a failed run twice, and a run is idempotent. Where there is no Lambda, adapters.jobs runs
``run`` in a thread."""
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


@importer_bp.lambda_function(name="importer")
def importer(event, context):
    job = run(str((event or {}).get("import_id", "")))
    return {"import_id": job.id, "status": job.status} if job else {"status": "unknown"}
