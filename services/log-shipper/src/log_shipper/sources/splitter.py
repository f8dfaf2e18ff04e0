"""`LineSplitter`: bytes in, complete lines out, with a bound on a line that never ends."""

from __future__ import annotations


class LineSplitter:
    """Keeps the unfinished tail between chunks; a tail over `max_line_bytes` is cut off as its own line."""

    __slots__ = ("_discarding", "_tail", "max_line_bytes")

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._tail = b""
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes held that do not make a line yet."""
        return len(self._tail)

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete lines `chunk` finishes (without their newlines)."""
        data = self._tail + chunk if self._tail else chunk
        lines = data.split(b"\n")
        tail = lines.pop()
        if self._discarding and lines:
            # The rest of an over-long line already shipped cut: skip it.
            lines.pop(0)
            self._discarding = False
        elif self._discarding:
            tail = b""
        if len(tail) > self.max_line_bytes:
            # A line with no end in sight: ship what we have (the parser cuts it) and skip the rest.
            lines.append(tail)
            tail = b""
            self._discarding = True
        self._tail = tail
        return lines

    def finish(self) -> list[bytes]:
        """At end of input: the unterminated last line, if any."""
        tail, self._tail = self._tail, b""
        return [tail] if tail and not self._discarding else []

    def reset(self) -> None:
        """Forget everything (the file was truncated)."""
        self._tail = b""
        self._discarding = False
