"""Switch-facing routes, and the same API as a dedicated Lambda for a function URL.

The Lambda is imported without app.py (a blueprint lambda_function), so this module must stay light:
the domain, its services, the DynamoDB adapter and the powertools Logger, nothing else.
"""
import logging

from aws_lambda_powertools import Logger
from chalice import Blueprint, Response

from . import switch_http

logger = Logger(service="cascade-switch")
# The services log through stdlib loggers under "cascade"; give them the powertools JSON handler.
_cascade_log = logging.getLogger("cascade")
_cascade_log.handlers, _cascade_log.propagate = list(logger.handlers), False
_cascade_log.setLevel(logger.log_level)
switch_bp = Blueprint(__name__)


def _response(result) -> Response:
    status, body = result
    return Response(body=switch_http.dumps(body), status_code=status, headers={"Content-Type": "application/json"})


@switch_bp.route("/authorize", methods=["POST"], content_types=["application/json"])
def authorize_route():
    request = switch_bp.current_request
    return _response(switch_http.authorize(request.headers, request.raw_body))


@switch_bp.route("/calls/{call_id}/complete", methods=["POST"], content_types=["application/json"])
def complete_route(call_id):
    request = switch_bp.current_request
    return _response(switch_http.complete(request.headers, call_id, request.raw_body))


@switch_bp.lambda_function(name="switch")
@logger.inject_lambda_context(clear_state=True)
def switch_function(event, context):
    """Lambda function URL (payload 2.0): POST /authorize and POST /calls/{call_id}/complete."""
    status, payload = _function_url(event if isinstance(event, dict) else {})
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": switch_http.dumps(payload)}


def _function_url(event: dict):
    import base64
    import binascii
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, dict) else None
    method = http.get("method", "POST") if isinstance(http, dict) else "POST"
    path = event.get("rawPath")
    headers = event.get("headers") if isinstance(event.get("headers"), dict) else {}
    body = event.get("body") or ""
    if not isinstance(path, str) or not isinstance(body, str):
        return 400, {"error": "invalid_request", "field": "body", "message": "body must be a JSON object"}
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return 400, {"error": "invalid_request", "field": "body", "message": "body is not valid base64"}
    if method != "POST":
        return 405, {"error": "method_not_allowed", "message": "POST only"}
    if path == "/authorize":
        return switch_http.authorize(headers, body)
    if path.startswith("/calls/") and path.endswith("/complete") and len(path) >= len("/calls//complete"):
        return switch_http.complete(headers, path[len("/calls/"):-len("/complete")], body)
    return 404, {"error": "not_found", "message": "no such route"}
