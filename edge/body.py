"""Reads a request body within the size limit and validates it, turning every failure into a 4xx."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request

from llmaas.errors import InvalidRequest, PayloadTooLarge

T = TypeVar("T", bound=BaseModel)

_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none", "function-after", "literal"}


def _param(loc: tuple[int | str, ...]) -> str:
    """``('messages', 0, 'content', 'str')`` -> ``messages[0].content`` (union branch names dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() and part not in _TYPE_NAMES and not part[:1].isupper():
            out += f".{part}" if out else part
    return out


def _error(detail: ErrorDetails) -> InvalidRequest:
    param = _param(detail["loc"])
    kind = detail["type"]
    if kind == "json_invalid":
        return InvalidRequest(
            "We could not parse the JSON body of your request. The API expects a JSON payload, "
            "but what was sent was not valid JSON."
        )
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param)
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    if kind == "model_type" and not param:
        return InvalidRequest("The request body must be a JSON object.")
    return InvalidRequest(f"Invalid value for '{param}': {detail['msg']}.", param=param or None)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body; raises ``PayloadTooLarge`` as soon as it is known to exceed ``limit`` bytes."""
    too_large = PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def parse(request: Request, model: type[T], limit: int) -> T:
    """Read and validate the body as ``model``; raises ``InvalidRequest`` or ``PayloadTooLarge``.

    A body that says it is something else than JSON (``text/plain``, a form) is refused rather
    than read as JSON anyway; one that says nothing is read as JSON, as OpenAI's clients send it."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind and kind != "application/json" and not kind.endswith("+json"):
        raise InvalidRequest(
            f"The body is sent as '{kind[:64]}'; send it as JSON, with 'Content-Type: application/json'."
        )
    return validate(await read_body(request, limit), model)


def validate(body: bytes, model: type[T]) -> T:
    """``body`` (JSON) as ``model``; raises ``InvalidRequest`` naming the first bad parameter."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _error(exc.errors(include_url=False)[0]) from None
