"""Request validation: every bad body is a clear OpenAI-style 400 that names the parameter."""

import pytest
from pydantic import ValidationError

from edge.body import _error
from edge.jobs import chat_job, completion_job, embed_job
from edge.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from llmaas.errors import InvalidRequest
from llmaas.wire import Caller

NOBODY = Caller(tenant="t", token_id="k")
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def chat(**extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def error_for(model: type, body: dict[str, object]) -> InvalidRequest:
    import json

    try:
        model.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        return _error(exc.errors(include_url=False)[0])
    except InvalidRequest as exc:
        return exc
    raise AssertionError("body was accepted")


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        (chat(temperature=3), "temperature", "temperature"),
        (chat(temperature="0.5"), "temperature", "temperature"),
        (chat(top_p=-1), "top_p", "top_p"),
        (chat(max_tokens=0), "max_tokens", "max_tokens"),
        (chat(stop=["a", "b", "c", "d", "e"]), "stop", "stop"),
        (chat(frobnicate=1), "frobnicate", "Unrecognized request argument supplied: frobnicate"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model", "Missing required parameter: 'model'"),
        (chat(messages=[]), "messages", "messages"),
        (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role", "messages[0].role"),
        (chat(logprobs=True), "logprobs", "'logprobs' is not supported"),
    ],
)
def test_chat_errors_name_the_parameter(body: dict[str, object], param: str, needle: str) -> None:
    error = error_for(ChatCompletionRequest, body)
    assert error.status == 400
    assert error.param == param
    assert needle in error.message


def test_harmless_openai_fields_are_accepted() -> None:
    req = ChatCompletionRequest.model_validate(
        chat(store=False, metadata={"a": "b"}, response_format={"type": "text"}, tool_choice="none")
    )
    assert req.model == "m"


def test_not_json_and_not_an_object_are_400() -> None:
    for raw in (b"{bad", b"[1, 2]", b'"text"'):
        with pytest.raises(ValidationError) as info:
            ChatCompletionRequest.model_validate_json(raw)
        assert _error(info.value.errors(include_url=False)[0]).status == 400


def test_chat_job_maps_parameters() -> None:
    req = ChatCompletionRequest.model_validate(
        chat(
            max_tokens=9,
            max_completion_tokens=5,
            stop="END",
            seed=3,
            temperature=0.2,
            user="u1",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ],
        )
    )
    job = chat_job(req, "m", "rid", 1, NOBODY)
    assert job.sampling.max_tokens == 5  # max_completion_tokens wins, as at OpenAI
    assert job.sampling.stop == ["END"]
    assert job.messages[0].content == "ab"
    assert job.caller.user == "u1"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(n=2), "n"),
        (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
        (chat(tools=[{"type": "function"}]), "tools[0].type"),
        (chat(tools=[{"type": "function", "function": {"name": "a b"}}]), "tools[0].function.name"),
        (chat(tools=[TOOL], tool_choice="sometimes"), "tool_choice"),
        (chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "other"}}), "tool_choice"),
        (chat(tool_choice="required"), "tool_choice"),
        (chat(response_format={"type": "json_object"}), "messages"),  # OpenAI: the word "json" is needed
        (chat(response_format={"type": "json_schema"}), "response_format"),
        (chat(response_format={"type": "yaml"}), "response_format.type"),
        (
            chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            "messages[0].content",
        ),
    ],
)
def test_chat_job_refuses_what_the_pipeline_cannot_honour(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        chat_job(ChatCompletionRequest.model_validate(body), "m", "rid", 1, NOBODY)
    assert info.value.param == param


def test_completion_job_takes_one_prompt_and_defaults_to_16_tokens() -> None:
    job = completion_job(
        CompletionRequest.model_validate({"model": "m", "prompt": ["once"]}), "m", "r", 1, NOBODY
    )
    assert job.prompt == "once" and job.sampling.max_tokens == 16
    with pytest.raises(InvalidRequest):
        completion_job(
            CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"]}), "m", "r", 1, NOBODY
        )


def test_embed_job_refuses_empty_input() -> None:
    assert embed_job(
        EmbeddingRequest.model_validate({"model": "e", "input": "x"}), "m", "r", 1, NOBODY
    ).inputs == ["x"]
    with pytest.raises(InvalidRequest):
        embed_job(EmbeddingRequest.model_validate({"model": "e", "input": ["ok", ""]}), "m", "r", 1, NOBODY)


def test_tools_tool_choice_and_response_format_reach_the_job() -> None:
    history = [
        {"role": "user", "content": "Weather in Paris? Answer in JSON."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    body = chat(
        messages=history,
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
    )
    job = chat_job(ChatCompletionRequest.model_validate(body), "m", "rid", 1, NOBODY)
    assert job.tools[0].name == "get_weather" and job.tools[0].parameters == '{"type":"object"}'
    assert (job.tool_choice, job.tool_name) == ("function", "get_weather")
    assert job.messages[1].tool_calls[0].id == "c1" and job.messages[2].tool_call_id == "c1"
    assert job.response_format.type == "json_schema" and job.response_format.schema == '{"type":"object"}'
    assert (
        chat_job(ChatCompletionRequest.model_validate(chat(tools=[TOOL])), "m", "r", 1, NOBODY).tool_choice
        == "auto"
    )
    assert chat_job(ChatCompletionRequest.model_validate(chat()), "m", "r", 1, NOBODY).tool_choice == "none"
