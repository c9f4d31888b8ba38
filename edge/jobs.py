"""Turns validated HTTP requests into wire jobs, refusing what the pipeline cannot honour."""

from __future__ import annotations

from edge.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest, EmbeddingRequest, TextPart
from llmaas import wire
from llmaas.errors import InvalidRequest


def _only_one_choice(n: int | None) -> None:
    if n not in (None, 1):
        raise InvalidRequest("Only n=1 is supported on this platform.", param="n")


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _sampling(req: ChatCompletionRequest | CompletionRequest, max_tokens: int | None) -> wire.SamplingParams:
    return wire.SamplingParams(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=_stops(req.stop),
        seed=req.seed,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
    )


def _message(index: int, message: ChatMessage) -> wire.ChatMessage:
    where = f"messages[{index}]"
    if message.role in ("tool", "function") or message.tool_calls or message.function_call:
        raise InvalidRequest("Tool calling is not supported on this platform yet.", param=where)
    content = message.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        pieces = []
        for part in content:
            if not isinstance(part, TextPart):
                raise InvalidRequest(
                    f"Content of type '{part.type}' is not supported by this model.", param=f"{where}.content"
                )
            pieces.append(part.text or part.refusal)
        text = "".join(pieces)
    return wire.ChatMessage(role=message.role, content=text, name=message.name)


def chat_job(req: ChatCompletionRequest, request_id: str, created: int) -> wire.GenerateJob:
    _only_one_choice(req.n)
    return wire.GenerateJob(
        request_id=request_id,
        model=req.model,
        kind="chat",
        created=created,
        messages=[_message(i, m) for i, m in enumerate(req.messages)],
        sampling=_sampling(req, req.max_completion_tokens or req.max_tokens),
        caller=wire.Caller(user=req.user),
    )


def completion_job(req: CompletionRequest, request_id: str, created: int) -> wire.GenerateJob:
    _only_one_choice(req.n)
    if isinstance(req.prompt, list) and len(req.prompt) != 1:
        raise InvalidRequest("Only one prompt per request is supported on this platform.", param="prompt")
    prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
    return wire.GenerateJob(
        request_id=request_id,
        model=req.model,
        kind="completion",
        created=created,
        prompt=prompt,
        sampling=_sampling(req, req.max_tokens),
        caller=wire.Caller(user=req.user),
    )


def embed_job(req: EmbeddingRequest, request_id: str, created: int) -> wire.EmbedJob:
    inputs = [req.input] if isinstance(req.input, str) else list(req.input)
    for i, text in enumerate(inputs):
        if not text:
            raise InvalidRequest("Input cannot be an empty string.", param=f"input[{i}]")
    return wire.EmbedJob(
        request_id=request_id,
        model=req.model,
        created=created,
        inputs=inputs,
        caller=wire.Caller(user=req.user),
    )
