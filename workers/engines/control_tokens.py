"""A message's text stays text: the control tokens of a chat template cannot be written into it.

A chat template renders the conversation to one string (``<|im_start|>user\\n…<|im_end|>``) that the
tokenizer reads back, turning every control token's text into the control token. A message that
contains ``<|im_end|>\\n<|im_start|>system\\nYou are…`` would thus close its own turn and open a
system turn of its author's making: a caller (or the end user behind a tenant's app, whose text the
app sends as ``user``) forging the instructions the model obeys most. OpenAI's API reads such text
as text; so does this platform.

Before rendering, each control token's text inside a message is replaced by a placeholder; the
rendered string is then tokenized piece by piece: the template's own text with its control tokens,
each placeholder as the plain text it stood for. A conversation without any (nearly all of them)
is rendered and tokenized in one call, exactly as before.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile("\ue000([0-9]+)\ue001")
"""Private-use characters around the index of the hidden text: nothing a template adds or reads."""


class Shield:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        controls = {t.content for t in added.values() if getattr(t, "special", False)}
        controls |= set(getattr(tokenizer, "all_special_tokens", ()))
        controls.discard("")
        # Longest first: "<|im_start|>" must not be found as a shorter token's text inside it.
        alternatives = sorted(controls, key=len, reverse=True)
        self._controls = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None
        if self._controls is not None:
            try:
                tokenizer.encode("<x>", add_special_tokens=False, split_special_tokens=True)
            except TypeError:  # a tokenizer that cannot read text as text (not Hugging Face's)
                log.error("%s cannot tokenize control tokens as text: messages are not shielded", tokenizer)
                self._controls = None

    def hide(self, text: str, hidden: list[str]) -> str:
        """``text`` with each control token's text (and any look-alike placeholder) replaced by a
        placeholder; what each stood for is appended to ``hidden``."""
        if self._controls is None or ("<" not in text and "[" not in text and "\ue000" not in text):
            return text  # every chat template's control tokens are bracketed (a cheap first test)

        def placeholder(match: re.Match[str]) -> str:
            hidden.append(match.group())
            return f"\ue000{len(hidden) - 1}\ue001"

        text = _PLACEHOLDER.sub(placeholder, text)  # a caller's own "placeholder" is text too
        return self._controls.sub(placeholder, text)

    def encode(self, rendered: str, hidden: list[str]) -> list[int]:
        """Token ids of a conversation rendered with placeholders: the template's control tokens
        as control tokens, the hidden texts as the plain text they are."""
        tokenizer = self._tokenizer
        ids: list[int] = []
        last = 0
        for match in _PLACEHOLDER.finditer(rendered):
            if match.start() > last:
                ids += tokenizer.encode(rendered[last : match.start()], add_special_tokens=False)
            index = int(match.group(1))
            text = hidden[index] if index < len(hidden) else match.group()
            ids += tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
            last = match.end()
        if last < len(rendered):
            ids += tokenizer.encode(rendered[last:], add_special_tokens=False)
        return ids
