"""OpenAPI fragments for the routes: request schemas come from pydantic, responses from msgspec."""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    }


def reply(name: str, streamed: str | None = None) -> dict[int | str, dict[str, Any]]:
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": REF.format(model=name)}}}
    if streamed is not None:
        content["text/event-stream"] = {
            "schema": {"type": "string", "description": f"`data: <{streamed}>` events, then `data: [DONE]`"}
        }
    return {200: {"description": "OK", "content": content}}


def response_schemas(types: list[type[msgspec.Struct]]) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(types, ref_template=REF.replace("{model}", "{name}"))
    return components
