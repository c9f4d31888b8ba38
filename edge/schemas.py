"""Request bodies of the OpenAI routes (pydantic: validation and the OpenAPI document).

Unknown fields are refused the way OpenAI refuses them. Fields OpenAI defines that we do not
implement yet are accepted only when they would not change the answer; otherwise a 400 names them.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmaas.errors import InvalidRequest


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # Fields defined by OpenAI that this platform does not implement yet: (name, harmless value test).
    unsupported: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> _Request:
        for name in self.unsupported:
            value = getattr(self, name)
            if value not in (None, False, [], {}, "none", {"type": "text"}):
                raise InvalidRequest(f"'{name}' is not supported on this platform yet.", param=name)
        return self


Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
Stop = str | Annotated[list[str], Field(max_length=4)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    include_usage: bool = False
    include_obfuscation: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    type: Literal["text", "refusal"]
    text: str = ""
    refusal: str = ""


class OtherPart(BaseModel):
    """Image, audio or file parts: recognised so the error can say they are not supported."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    type: Literal["image_url", "input_audio", "file"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart | OtherPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None


ModelName = Annotated[str, Field(min_length=1, max_length=256)]
"""No model is named longer; a longer name would be echoed in errors and stored in usage."""
TokenCount = Annotated[int, Field(ge=1, le=1_000_000_000)]
"""Far above any context, and within what prices and counters compute with."""
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""A 64-bit seed, as the engines take it."""


class ChatCompletionRequest(_Request):
    model: ModelName
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=1, ge=1, le=128)
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stop: Stop | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    user: str | None = None
    # Accepted and without effect on the answer.
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[Literal["text"]] | None = None
    # Checked in depth when the job is built (edge.jobs), where errors can name the exact item.
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    # Defined by OpenAI, refused until implemented.
    logprobs: bool | None = None
    top_logprobs: int | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    moderation: dict[str, Any] | None = None

    unsupported = (
        "logprobs", "top_logprobs", "functions", "function_call", "logit_bias", "audio",
        "prediction", "web_search_options", "reasoning_effort", "verbosity", "moderation",
    )  # fmt: skip


class CompletionRequest(_Request):
    model: ModelName
    prompt: str | Annotated[list[str], Field(min_length=1)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=1, ge=1, le=128)
    max_tokens: TokenCount | None = 16
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stop: Stop | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    user: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=1)
    echo: bool | None = None
    logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    suffix: str | None = None

    unsupported = ("echo", "logprobs", "logit_bias", "suffix")


class EmbeddingRequest(_Request):
    model: ModelName
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65_536)
    user: str | None = None

    unsupported = ("dimensions",)


REQUEST_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionRequest, CompletionRequest, EmbeddingRequest)
