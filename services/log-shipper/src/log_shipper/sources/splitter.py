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

    def feed(self, chunk: bytes) -> bytes:
        """The complete lines `chunk` finishes, joined by newlines (no final newline); b"" for none."""
        end = chunk.rfind(b"\n")
        if end < 0:
            if not self._discarding:
                self._tail += chunk
                if len(self._tail) > self.max_line_bytes:
                    return self._cut_off()
            return b""
        block = self._tail + chunk[:end] if self._tail else chunk[:end]
        self._tail = chunk[end + 1 :]
        if self._discarding:
            # The rest of an over-long line already shipped cut: skip it.
            cut = block.find(b"\n")
            block = b"" if cut < 0 else block[cut + 1 :]
            self._discarding = False
        if len(self._tail) > self.max_line_bytes:
            tail = self._cut_off()
            return block + b"\n" + tail if block else tail
        return block

    def _cut_off(self) -> bytes:
        """A line with no end in sight: ship what we have (the parser cuts it) and skip the rest."""
        tail, self._tail = self._tail, b""
        self._discarding = True
        return tail

    def finish(self) -> bytes:
        """At end of input: the unterminated last line, if any."""
        tail, self._tail = self._tail, b""
        return b"" if self._discarding else tail

    def reset(self) -> None:
        """Forget everything (the file was truncated)."""
        self._tail = b""
        self._discarding = False
