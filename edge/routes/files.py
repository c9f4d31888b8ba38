"""The Files API, as OpenAI's: upload (``purpose=batch``), list, retrieve, content, delete; each
tenant sees its own files only (``llmaas.files`` names every file by its tenant)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from edge import context, pages
from llmaas import files
from llmaas.errors import InvalidRequest, NotFound

router = APIRouter()


def _missing(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id[:64]}", param="id")


@router.post("/v1/files", summary="Upload a batch input file (multipart: file, purpose=batch)")
async def create_file(request: Request) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    record = await edge.files.upload(principal.tenant.name, request)
    return JSONResponse(record.to_openai())


@router.get("/v1/files", summary="The tenant's files, newest first (after, limit, order, purpose)")
async def list_files(request: Request) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    params = request.query_params
    limit = pages.limit(params.get("limit", "10000"), 10_000)
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"Invalid 'order' {order[:16]!r}: use asc or desc.", param="order")
    found = await edge.files.store.records(principal.tenant.name)
    if purpose := params.get("purpose"):
        found = [r for r in found if r.purpose == purpose]
    if order == "desc":
        found.reverse()
    return JSONResponse(pages.page(found, params.get("after"), limit, what="file", ids_always=True))


@router.get("/v1/files/{file_id}", summary="One file")
async def retrieve_file(request: Request, file_id: str) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    record = await edge.files.store.record(principal.tenant.name, file_id)
    if record is None:
        raise _missing(file_id)
    return JSONResponse(record.to_openai())


@router.get("/v1/files/{file_id}/content", summary="A file's bytes", response_class=Response)
async def file_content(request: Request, file_id: str) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    store = edge.files.store
    tenant = principal.tenant.name
    record = await store.record(tenant, file_id)
    if record is None:
        raise _missing(file_id)
    chunks = store.read(tenant, file_id)
    first = await anext(chunks, b"")  # a store failure is still a clear error, before the 200

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"content-length": str(record.bytes), "content-disposition": _attachment(record)},
    )


def _attachment(record: files.FileRecord) -> str:
    safe = "".join(c for c in record.filename if c.isalnum() or c in "._-") or record.id
    return f'attachment; filename="{safe}"'


@router.delete("/v1/files/{file_id}", summary="Delete a file")
async def delete_file(request: Request, file_id: str) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    if not await edge.files.store.delete(principal.tenant.name, file_id):
        raise _missing(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
