"""LineSplitter: complete lines out of arbitrary chunks, and a bound on a line that never ends."""

from __future__ import annotations

from log_shipper.sources.splitter import LineSplitter


class TestLineSplitter:
    def test_lines_split_across_chunks_are_joined(self):
        """A line cut between two reads comes out whole, once its newline arrives."""
        splitter = LineSplitter(100)
        assert splitter.feed(b'{"a":1}\n{"b"') == b'{"a":1}'
        assert splitter.pending == 4
        assert splitter.feed(b":2}\n") == b'{"b":2}'
        assert splitter.pending == 0

    def test_unterminated_last_line_comes_out_at_the_end(self):
        """At end of input the last line without a newline is not lost."""
        splitter = LineSplitter(100)
        assert splitter.feed(b"one\ntwo") == b"one"
        assert splitter.finish() == b"two"

    def test_line_that_never_ends_is_cut_and_its_rest_skipped(self):
        """A tail over the limit ships as one (cut) line, and the rest of that line is skipped."""
        splitter = LineSplitter(10)
        assert splitter.feed(b"x" * 25) == b"x" * 25
        assert splitter.pending == 0
        assert splitter.feed(b"yyy") == b""
        assert splitter.feed(b"yy\nnext\n") == b"next"

    def test_reset_forgets_the_tail(self):
        """After a truncation the half-line read before it is dropped."""
        splitter = LineSplitter(100)
        splitter.feed(b"partial")
        splitter.reset()
        assert splitter.feed(b"fresh\n") == b"fresh"
