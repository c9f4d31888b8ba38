"""The wire contract: every frame and job survives the codec, and old readers ignore new fields."""

import msgspec
import pytest

from llmaas import codec, subjects
from llmaas.errors import RemoteError, Unavailable
from llmaas.wire import (
    Accepted,
    Caller,
    ChatMessage,
    Delta,
    Done,
    Embeddings,
    EmbedJob,
    Failed,
    GenerateJob,
    SamplingParams,
    Usage,
)

JOBS = [
    GenerateJob(
        request_id="r1",
        model="m",
        kind="chat",
        created=1,
        messages=[ChatMessage(role="user", content="hi")],
        sampling=SamplingParams(max_tokens=3, stop=["x"], seed=7, temperature=0.5),
        caller=Caller(user="u"),
    ),
    GenerateJob(request_id="r2", model="m", kind="completion", created=2, prompt="once upon"),
    EmbedJob(request_id="r3", model="e", created=3, inputs=["a", "b"]),
]

FRAMES = [
    Accepted(worker_id="w1"),
    Delta(text="hello", tokens=2),
    Done(finish_reason="length", usage=Usage(prompt_tokens=3, completion_tokens=4, reasoning_tokens=1)),
    Embeddings(vectors=[[0.5, -0.5]], usage=Usage(prompt_tokens=2)),
    Failed(error=Unavailable("no", retry_after_s=2.0).to_wire()),
]


@pytest.mark.parametrize("job", JOBS, ids=lambda j: type(j).__name__)
def test_jobs_round_trip(job: object) -> None:
    assert codec.job_decoder.decode(codec.encode(job)) == job


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_frames_round_trip(frame: object) -> None:
    assert codec.frame_decoder.decode(codec.encode(frame)) == frame


def test_a_newer_sender_with_extra_fields_is_still_understood() -> None:
    class DeltaV2(msgspec.Struct, tag="d", tag_field="t", kw_only=True):
        text: str
        tokens: int = 1
        logprob: float = -0.1

    assert codec.frame_decoder.decode(codec.encode(DeltaV2(text="x"))) == Delta(text="x")


def test_a_wire_error_comes_back_as_the_same_http_error() -> None:
    sent = Unavailable("busy", code="model_unavailable", param="model", retry_after_s=5)
    frame = codec.frame_decoder.decode(codec.encode(Failed(error=sent.to_wire())))
    assert isinstance(frame, Failed)
    received = RemoteError(frame.error).to_wire()
    assert received == sent.to_wire()


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(codec.DecodeError):
        codec.frame_decoder.decode(b"\x00\x01garbage")


@pytest.mark.parametrize("bad", ["a.b", "a b", "", "*", ">", "x" * 65])
def test_subject_tokens_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        subjects.check_token(bad)


def test_reply_subject_carries_the_request_id() -> None:
    reply = subjects.reply("edge1", "abc123")
    assert reply.startswith(subjects.reply_prefix("edge1") + ".")
    assert subjects.request_id_of_reply(reply) == "abc123"
