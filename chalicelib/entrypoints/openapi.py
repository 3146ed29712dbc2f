"""Builds /openapi.json from the portal's route declarations (placeholder; see portal.py)."""


def document(routes):
    return {"openapi": "3.0.3", "info": {"title": "Cascade portal API", "version": "1"}, "paths": {}}
