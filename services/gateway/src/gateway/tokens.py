"""Token counting where a provider reports none: words and punctuation marks, each one token."""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.schema import Message

_TOKEN = re.compile(r"\w+|[^\w\s]")
# OpenAI's chat format adds a few tokens per message and per reply; keep the same shape of count.
_PER_MESSAGE = 3
_PER_REPLY = 3


def count_text_tokens(text: str) -> int:
    """Tokens in `text`."""
    return len(_TOKEN.findall(text))


def count_prompt_tokens(messages: Sequence[Message]) -> int:
    """Prompt tokens of a chat: each message's text plus a fixed overhead per message."""
    return sum(count_text_tokens(message.text()) + _PER_MESSAGE for message in messages) + _PER_REPLY
