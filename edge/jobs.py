"""Turns validated HTTP requests into wire jobs, refusing what the pipeline cannot honour."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from edge.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest, EmbeddingRequest, TextPart
from llmaas import wire
from llmaas.errors import InvalidRequest

_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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


def _call(where: str, raw: dict[str, Any]) -> wire.ToolCall:
    function = raw.get("function")
    if raw.get("type", "function") != "function" or not isinstance(function, dict):
        raise InvalidRequest("Only tool calls of type 'function' are supported.", param=where)
    name, arguments = function.get("name"), function.get("arguments", "")
    if not isinstance(name, str) or not isinstance(arguments, str) or not isinstance(raw.get("id"), str):
        raise InvalidRequest(
            "A tool call needs a string 'id', 'function.name' and 'function.arguments'.", param=where
        )
    return wire.ToolCall(id=raw["id"], name=name, arguments=arguments)


def _message(index: int, message: ChatMessage) -> wire.ChatMessage:
    where = f"messages[{index}]"
    if message.role == "function" or message.function_call:
        raise InvalidRequest("The deprecated 'function' role is not supported; use tools.", param=where)
    if message.role == "tool" and not message.tool_call_id:
        raise InvalidRequest(
            f"Missing required parameter: '{where}.tool_call_id'.", param=f"{where}.tool_call_id"
        )
    calls = [_call(f"{where}.tool_calls[{i}]", c) for i, c in enumerate(message.tool_calls or [])]
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
    return wire.ChatMessage(
        role=message.role,
        content=text,
        name=message.name,
        tool_calls=calls,
        tool_call_id=message.tool_call_id,
    )


def _schema_text(schema: Any, where: str) -> str:
    if schema is None:
        return ""
    if not isinstance(schema, dict):
        raise InvalidRequest("A JSON Schema must be an object.", param=where)
    return json.dumps(schema, separators=(",", ":"))


def _tool(index: int, raw: dict[str, Any]) -> wire.Tool:
    where = f"tools[{index}]"
    function = raw.get("function")
    if raw.get("type") != "function" or not isinstance(function, dict):
        raise InvalidRequest("Only tools of type 'function' are supported.", param=f"{where}.type")
    name = function.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise InvalidRequest(
            "Invalid 'function.name': letters, digits, '_' and '-' only, at most 64 characters.",
            param=f"{where}.function.name",
        )
    description = function.get("description", "")
    if not isinstance(description, str):
        raise InvalidRequest("'description' must be a string.", param=f"{where}.function.description")
    parameters = _schema_text(function.get("parameters"), f"{where}.function.parameters")
    return wire.Tool(name=name, description=description, parameters=parameters)


def _tool_choice(req: ChatCompletionRequest, tools: list[wire.Tool]) -> tuple[Any, str | None]:
    choice = req.tool_choice
    if choice is None:
        return ("auto" if tools else "none"), None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequest(
                "Invalid 'tool_choice': expected 'none', 'auto', 'required' or a function.",
                param="tool_choice",
            )
        if choice != "none" and not tools:
            raise InvalidRequest(
                f"'tool_choice' is '{choice}' but no 'tools' are given.", param="tool_choice"
            )
        return choice, None
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequest(
            "Invalid 'tool_choice': expected {'type': 'function', 'function': {'name': ...}}.",
            param="tool_choice",
        )
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f"Tool choice '{name}' is not among the given tools.", param="tool_choice")
    return "function", name


def _response_format(req: ChatCompletionRequest, messages: list[wire.ChatMessage]) -> wire.ResponseFormat:
    raw = req.response_format
    if raw is None or raw.get("type") == "text":
        return wire.ResponseFormat()
    kind = raw.get("type")
    if kind == "json_object":
        # OpenAI's rule: without the word in the conversation, models tend to emit endless whitespace.
        if not any("json" in m.content.lower() for m in messages):
            raise InvalidRequest(
                "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                "'json_object'.",
                param="messages",
            )
        return wire.ResponseFormat(type="json_object")
    if kind == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidRequest(
                "Missing required parameter: 'response_format.json_schema.name'.", param="response_format"
            )
        schema = _schema_text(spec.get("schema") or {"type": "object"}, "response_format.json_schema.schema")
        return wire.ResponseFormat(type="json_schema", schema=schema)
    raise InvalidRequest(
        "Invalid 'response_format.type': expected 'text', 'json_object' or 'json_schema'.",
        param="response_format.type",
    )


def chat_job(
    req: ChatCompletionRequest, model: str, request_id: str, created: int, caller: wire.Caller
) -> wire.GenerateJob:
    """``model``: the one that answers (the catalog resolves aliases before)."""
    _only_one_choice(req.n)
    tools = [_tool(i, t) for i, t in enumerate(req.tools or [])]
    tool_choice, tool_name = _tool_choice(req, tools)
    messages = [_message(i, m) for i, m in enumerate(req.messages)]
    return wire.GenerateJob(
        request_id=request_id,
        model=model,
        kind="chat",
        created=created,
        messages=messages,
        sampling=_sampling(req, req.max_completion_tokens or req.max_tokens),
        caller=msgspec.structs.replace(caller, user=req.user),
        tools=tools,
        tool_choice=tool_choice,
        tool_name=tool_name,
        response_format=_response_format(req, messages),
    )


def completion_job(
    req: CompletionRequest, model: str, request_id: str, created: int, caller: wire.Caller
) -> wire.GenerateJob:
    _only_one_choice(req.n)
    if isinstance(req.prompt, list) and len(req.prompt) != 1:
        raise InvalidRequest("Only one prompt per request is supported on this platform.", param="prompt")
    prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
    return wire.GenerateJob(
        request_id=request_id,
        model=model,
        kind="completion",
        created=created,
        prompt=prompt,
        sampling=_sampling(req, req.max_tokens),
        caller=msgspec.structs.replace(caller, user=req.user),
    )


def embed_job(
    req: EmbeddingRequest, model: str, request_id: str, created: int, caller: wire.Caller
) -> wire.EmbedJob:
    inputs = [req.input] if isinstance(req.input, str) else list(req.input)
    for i, text in enumerate(inputs):
        if not text:
            raise InvalidRequest("Input cannot be an empty string.", param=f"input[{i}]")
    return wire.EmbedJob(
        request_id=request_id,
        model=model,
        created=created,
        inputs=inputs,
        caller=msgspec.structs.replace(caller, user=req.user),
    )
