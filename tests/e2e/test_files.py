"""The Files API on a real edge and JetStream object store: the openai SDK's calls, one tenant's
files out of another's reach, malformed and oversized uploads refused with nothing left stored."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

import httpx
import openai
import psutil
import pytest

from llmaas import streams
from tests.stack import Stack

SMALL = {"LLMAAS_FILES_MAX_BYTES": "262144", "LLMAAS_FILES_TENANT_BYTES": "600000"}


@pytest.fixture(scope="module")
def files_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("files"))
    try:
        small = s.edge(name="edge-small", env=SMALL)
        s.edge(env={"LLMAAS_FILES_MAX_BYTES": str(48 * 1024 * 1024)})  # base_url: this one's
        s.small_url = small  # type: ignore[attr-defined]
        yield s
    finally:
        s.close()


def lines(n: int, pad: int = 0) -> bytes:
    rows = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "synthetic-chat",
                "messages": [{"role": "user", "content": f"q{i} " + "x" * pad}],
            },
        }
        for i in range(n)
    ]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def client(s: Stack, key: str, url: str = "") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url or s.base_url}/v1", api_key=key, max_retries=0)


def stored_objects(s: Stack) -> int:
    async def count() -> int:
        nc = await s.connect()
        try:
            info = await nc.jetstream().stream_info(streams.FILES.stream)
            return int(info.state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


def test_the_openai_sdk_uploads_lists_reads_and_deletes_a_batch_file(files_stack: Stack) -> None:
    s = files_stack
    sdk = client(s, s.new_key("files-a"))
    data = lines(3)
    made = sdk.files.create(file=("requests.jsonl", data), purpose="batch")
    assert made.id.startswith("file-") and made.object == "file" and made.purpose == "batch"
    assert made.bytes == len(data) and made.filename == "requests.jsonl" and made.status == "processed"
    assert made.expires_at == made.created_at + 7 * 86400
    assert sdk.files.retrieve(made.id) == made
    assert made.id in [f.id for f in sdk.files.list()]
    assert sdk.files.content(made.id).read() == data
    second = sdk.files.create(file=("more.jsonl", lines(1)), purpose="batch")
    page = sdk.files.list(limit=1)  # newest first, a cursor to the rest
    assert [f.id for f in page.data] == [second.id] and page.has_more
    assert [f.id for f in sdk.files.list(limit=1, after=second.id).data] == [made.id]
    assert [f.id for f in sdk.files.list(order="asc")] == [made.id, second.id]
    gone = sdk.files.delete(made.id)
    assert gone.deleted and gone.id == made.id
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        sdk.files.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.content(made.id)
    assert [f.id for f in sdk.files.list()] == [second.id]


def test_a_tenant_cannot_see_read_or_delete_another_tenant_s_file(files_stack: Stack) -> None:
    s = files_stack
    owner, other = client(s, s.new_key("files-owner")), client(s, s.new_key("files-other"))
    made = owner.files.create(file=("mine.jsonl", lines(2)), purpose="batch")
    assert made.id not in [f.id for f in other.files.list()]
    for attempt in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError):
            attempt(made.id)
    for forged in ("../files-owner/" + made.id, "files-owner." + made.id, "file-*", "file->"):
        response = httpx.get(f"{s.base_url}/v1/files/{forged}/content", headers=s.auth, timeout=10)
        assert response.status_code == 404, (forged, response.text)
    assert owner.files.content(made.id).read() == lines(2)


def test_malformed_lines_are_a_400_naming_the_line_and_nothing_is_stored(files_stack: Stack) -> None:
    s = files_stack
    sdk = client(s, s.new_key("files-bad"))
    before = stored_objects(s)
    cases = {
        lines(2) + b'{"custom_id": "x", "method": \n': "Line 3 of the file is not valid JSON",
        lines(1) + b"[1, 2]\n": "Line 2 of the file is not a JSON object",
        b"\n\n": "holds no request",
    }
    for data, message in cases.items():
        with pytest.raises(openai.BadRequestError, match=message) as refused:
            sdk.files.create(file=("bad.jsonl", data), purpose="batch")
        assert refused.value.body["param"] == "file"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="Invalid 'purpose' 'fine-tune'") as wrong:
        sdk.files.create(file=("in.jsonl", lines(1)), purpose="fine-tune")
    assert wrong.value.body["param"] == "purpose"  # type: ignore[index]
    plain = httpx.post(f"{s.base_url}/v1/files", headers=s.auth, json={"file": "x"}, timeout=10)
    assert plain.status_code == 400 and "multipart/form-data" in plain.json()["error"]["message"]
    assert sdk.files.list().data == []
    assert stored_objects(s) == before  # bytes that were streamed in before the bad line were removed


def test_oversized_uploads_and_a_full_tenant_are_refused_with_nothing_left(files_stack: Stack) -> None:
    s = files_stack
    small: str = s.small_url  # type: ignore[attr-defined]
    key = s.new_key("files-big")
    sdk = client(s, key, small)
    big = lines(400, pad=1000)  # ~430 KB, over 256 KiB
    before = stored_objects(s)
    with pytest.raises(openai.APIStatusError, match=r"over 0\.25 MB, the most one upload") as refused:
        sdk.files.create(file=("big.jsonl", big), purpose="batch")
    assert refused.value.status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused while it streams
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        for start in range(0, len(big), 16384):
            yield big[start : start + 16384]
        yield b"\r\n" + boundary + b"--\r\n"

    response = httpx.post(
        f"{small}/v1/files",
        content=chunked(),
        headers={"authorization": f"Bearer {key}", "content-type": "multipart/form-data; boundary=b0undary"},
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert stored_objects(s) == before
    # The tenant's files may hold 600 000 bytes together: two of ~215 KB fit, the third does not.
    half = lines(200, pad=1000)
    for _ in range(2):
        sdk.files.create(file=("half.jsonl", half), purpose="batch")
    with pytest.raises(openai.RateLimitError, match="delete some") as full:
        sdk.files.create(file=("half.jsonl", half), purpose="batch")
    assert full.value.code == "insufficient_quota"
    assert len(sdk.files.list().data) == 2


def test_a_large_file_goes_through_the_edge_without_being_held_whole(files_stack: Stack) -> None:
    s = files_stack
    sdk = client(s, s.new_key("files-large"))
    data = lines(40_000, pad=900)  # ~40 MB
    edge = psutil.Process(s.procs["edge"].pid)
    before = edge.memory_info().rss
    made = sdk.files.create(file=("large.jsonl", data), purpose="batch")
    grown_up = edge.memory_info().rss - before
    assert made.bytes == len(data)
    with httpx.stream(
        "GET", f"{s.base_url}/v1/files/{made.id}/content", headers=sdk_auth(sdk), timeout=60
    ) as r:
        digest = hashlib.sha256()
        for chunk in r.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    grown = edge.memory_info().rss - before
    # The file is 40 MB; what the edge grew by is the parser's and the store's buffers.
    assert grown_up < 24 * 1024 * 1024 and grown < 24 * 1024 * 1024, (grown_up, grown)


def sdk_auth(sdk: openai.OpenAI) -> dict[str, str]:
    return {"authorization": f"Bearer {sdk.api_key}"}
