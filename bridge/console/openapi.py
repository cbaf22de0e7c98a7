"""The OpenAPI 3.1 document of the console's API, made from the endpoint table
(bridge/console/api.py) and the request models. Served at /api/openapi.json and
kept in the repository as docs/openapi.json (a test checks they are equal;
``mwl-bridge admin openapi > docs/openapi.json`` writes it).
"""

from __future__ import annotations

import json
import re
from typing import Any

from bridge.console.api import ENDPOINTS
from bridge.console.web import MAX_ROW_ID, Endpoint

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["status", "message"],
    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}}}}}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _ERROR,
    "Page": {"type": "object", "required": ["items", "total", "limit", "offset"],
             "properties": {"items": {"type": "array", "items": {"type": "object"}},
                            "total": {"type": "integer"}, "limit": {"type": "integer"},
                            "offset": {"type": "integer"}}},
    "ActionResult": {"type": "object", "required": ["id", "status", "message"],
                     "properties": {"id": {"type": "integer"}, "status": {"type": "string"},
                                    "queued": {"type": "integer",
                                               "description": "status messages queued"},
                                    "message": {"type": "string"}}},
    "Session": {"type": "object", "required": ["name", "role", "kind"],
                "properties": {"name": {"type": "string"},
                               "role": {"enum": ["viewer", "operator", "admin"]},
                               "kind": {"enum": ["user", "token", "anonymous"]},
                               "csrf_token": {"type": ["string", "null"]}}},
}

_ERRORS = {"401": "not logged in, or an unknown token",
           "403": "the role may not do this, or a CSRF / origin check failed",
           "404": "no such row",
           "409": "not possible in the row's current state, or the row exists already",
           "413": "the body is larger than 4 MiB",
           "415": "the body is not application/json",
           "422": "the body does not fit the schema (the message names the field)"}


def _path(ep: Endpoint) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for name, kind in re.findall(r"\{(\w+):(\w+)\}", ep.path):
        params.append({"name": name, "in": "path", "required": True,
                       "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ROW_ID}
                       if kind in ("int", "rowid") else {"type": "string"}})
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", ep.path), params


def document(version: str = "") -> dict[str, Any]:
    schemas = dict(SCHEMAS)
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        path, params = _path(ep)
        op: dict[str, Any] = {"operationId": ep.handler.__name__, "summary": ep.summary,
                              "tags": [ep.tag]}
        if ep.role is not None:
            op["description"] = f"Role: {ep.role} or above."
            op["security"] = [{"session": []}, {"token": []}]
        if params:
            op["parameters"] = params
        if ep.body is not None:
            schema = ep.body.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas[name] = sub
            schemas[ep.body.__name__] = schema
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{ep.body.__name__}"}}}}
        ok_schema = ({"$ref": f"#/components/schemas/{ep.response}"} if ep.response
                     else {"type": "object"})
        responses: dict[str, Any] = {str(ep.ok): {
            "description": "OK", "content": {"application/json": {"schema": ok_schema}}}}
        wanted = ["401", "403"] if ep.role is not None else []
        if params:
            wanted += ["404"]
        if ep.method == "POST" and (params or ep.ok == 201):
            wanted += ["409"]  # not now (the row's state), or it exists already
        if ep.body is not None:
            wanted += ["413", "415", "422"]
        for code in wanted:
            responses[code] = {"description": _ERRORS[code], "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}
        op["responses"] = responses
        paths.setdefault(path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "mwl-bridge operator console API",
                 "version": version or "1",
                 "description": "JSON API of the mwl-bridge operator console "
                                "(docs/console.md). Listings are POST .../search with "
                                "the filters in the body; errors are "
                                "{\"error\": {\"status\", \"message\"}}."},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "mwl_session",
                            "description": "after logging in at /login; unsafe requests "
                                           "also send X-CSRF-Token"},
                "token": {"type": "http", "scheme": "bearer",
                          "description": "an API token from admin.tokens"}}},
    }


def document_text(version: str = "") -> str:
    return json.dumps(document(version), indent=2, sort_keys=False) + "\n"
