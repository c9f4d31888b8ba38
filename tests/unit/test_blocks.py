"""Prompt blocks: a prompt's prefix identity, salted with the tenant, bounded in cost."""

from llmaas import blocks
from llmaas.wire import Caller, ChatMessage, GenerateJob


def chat(tenant: str, *contents: str) -> GenerateJob:
    messages = [
        ChatMessage(role="user" if i % 2 == 0 else "assistant", content=c) for i, c in enumerate(contents)
    ]
    return GenerateJob(
        request_id="r", model="m", kind="chat", created=0, messages=messages, caller=Caller(tenant=tenant)
    )  # type: ignore[arg-type]


def test_a_longer_conversation_keeps_the_blocks_of_its_beginning() -> None:
    first = blocks.of_job(chat("acme", "q" * 700))
    later = blocks.of_job(chat("acme", "q" * 700, "a" * 300, "next " * 50))
    assert len(first) == (700 + len("\x1euser\x1f")) // blocks.BLOCK_CHARS
    assert later[: len(first)] == first and len(later) > len(first)


def test_a_different_beginning_changes_every_block_after_it() -> None:
    one = blocks.of_job(chat("acme", "x" * 64 + "y" * 640))
    two = blocks.of_job(chat("acme", "z" * 64 + "y" * 640))
    assert not set(one) & set(two)


def test_two_tenants_never_share_a_block() -> None:
    assert not set(blocks.of_job(chat("acme", "same " * 400))) & set(
        blocks.of_job(chat("other", "same " * 400))
    )


def test_a_huge_prompt_names_only_its_first_blocks() -> None:
    huge = chat("acme", "s" * 2_000_000)
    named = blocks.of_job(huge)
    assert len(named) == blocks.MAX_BLOCKS
    assert named == blocks.ids("acme", blocks.text_of(huge))  # the same as from the whole text
    assert blocks.prompt_tokens(huge) > 400_000
