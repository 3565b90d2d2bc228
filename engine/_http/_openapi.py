"""The OpenAPI 3.1 document, generated from the operation table and the msgspec schemas.

Nothing here is written by hand per endpoint: paths, parameters, bodies, responses and
security come from :data:`engine._http._api.OPERATIONS`, and every schema from
``msgspec.json.schema_components`` over the same types that validate requests and encode
responses. A field added to a Struct is in the document at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from ._api import Operation
from ._errors import ERROR_CODES
from ._schemas import ErrorResponse, ExtensionError, GraphView

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{name}"


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without the ``null`` branch of ``X | None`` (an absent
    parameter is how a query string says "none")."""
    schema = dict(schema)
    if "default" in schema and schema["default"] is None:
        del schema["default"]
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1:
            del schema["anyOf"]
            schema = {**kept[0], **schema}
        else:
            schema["anyOf"] = kept
    return schema


def _parameters(
    params_type: type | None, components: dict[str, Any], path: str
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": "A workflow id (its newest run) or a run id."
            if name == "id"
            else "The signal's or query's name.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 512 if name == "id" else 256},
        }
        for name in re.findall(r"\{(\w+)\}", path)
    ]
    if params_type is None:
        return out
    struct = components.pop(params_type.__name__)
    for name, schema in struct["properties"].items():
        cleaned = _without_null(schema)
        description = cleaned.pop("description", None)
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": False,
            "schema": cleaned,
        }
        if description:
            parameter["description"] = description
        out.append(parameter)
    return out


def openapi_document(
    operations: Sequence[Operation], *, version: str, token_configured: bool
) -> dict[str, Any]:
    # The built-in extensions' schemas, which ExecutionDetail.extensions refers to by name.
    types: list[Any] = [ErrorResponse, GraphView, ExtensionError]
    for operation in operations:
        types.extend(t for t in (operation.body, operation.response, operation.params) if t)
    _, components = msgspec.json.schema_components(types, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    error_ref = {"$ref": _REF.format(name="ErrorResponse")}
    for operation in operations:
        responses: dict[str, Any] = {}
        success: dict[str, Any] = {"description": "Success."}
        if operation.response is not None:
            ref = {"$ref": _REF.format(name=operation.response.__name__)}
            success["content"] = {operation.media_type: {"schema": ref}}
        else:
            success["content"] = {operation.media_type: {"schema": {"type": "object"}}}
        responses[str(operation.status)] = success
        codes = list(operation.errors)
        if operation.mutating or token_configured:
            codes.append("unauthorized")
        if operation.mutating:
            codes.append("forbidden_origin")
        codes += ["misdirected_request", "method_not_allowed", "store_unavailable"]
        for code in codes:
            status, meaning = ERROR_CODES[code]
            entry = responses.setdefault(
                str(status),
                {"description": "", "content": {"application/json": {"schema": error_ref}}},
            )
            entry["description"] = (entry["description"] + f" `{code}`: {meaning}").strip()
        responses["default"] = {
            "description": "Any other error, as the same JSON body.",
            "content": {"application/json": {"schema": error_ref}},
        }
        spec: dict[str, Any] = {
            "operationId": operation.operation_id,
            "summary": operation.summary,
            "parameters": _parameters(operation.params, components, operation.full_path),
            "responses": responses,
        }
        if operation.body is not None:
            ref = {"$ref": _REF.format(name=operation.body.__name__)}
            spec["requestBody"] = {
                "required": operation.body_required,
                "content": {"application/json": {"schema": ref}},
            }
        if operation.mutating or token_configured:
            spec["security"] = [{"bearer": []}]
        paths.setdefault(operation.full_path, {})[operation.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "perdura durable execution API",
            "version": version,
            "description": "Inspect and steer workflow runs. Errors are "
            '`{"error": {"code": ..., "message": ...}}`; see docs/http-api.md.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
