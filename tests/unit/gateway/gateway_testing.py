"""Constants and request builders the gateway tests share."""

from __future__ import annotations

from typing import Any

USER_KEY = "test-user-1-key"
ADMIN_KEY = "test-admin-key"
UPSTREAM_KEY = "test-upstream-key"
AUTH = {"Authorization": f"Bearer {USER_KEY}"}


def chat(model: str, content: str = "one two three", **extra: Any) -> dict[str, Any]:
    """A chat completion body with one user message."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def sse_events(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [block[len("data: ") :] for block in text.split("\n\n") if block.startswith("data: ")]


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
