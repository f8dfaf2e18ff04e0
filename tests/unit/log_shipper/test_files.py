"""FileTailer: new lines, rotation, truncation, resume at saved positions, partial last lines."""

from __future__ import annotations

import pytest

from log_shipper.positions import Position
from log_shipper.sources.files import FileTailer, parse_file_specs


class RecordingBatcher:
    """Stands in for LogBatcher: keeps every block handed on."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.services: list[str] = []

    async def add(self, block: bytes, source: str, default_service: str) -> int:
        self.lines.extend(block.decode().split("\n"))
        self.services.append(default_service)
        return 1


def tailer_for(pattern: str, batcher, saved=None) -> FileTailer:
    return FileTailer(
        specs=[(pattern, "svc")], batcher=batcher, saved=saved or {}, max_line_bytes=1024, poll=0.01
    )


async def pump(tailer: FileTailer) -> None:
    """Read every file to its end (a few rounds, as the run loop would)."""
    tailer.discover()
    for _ in range(4):
        for tailed in list(tailer._files.values()):
            while await tailer.read(tailed):
                pass


def append(path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


class TestFileTailer:
    @pytest.mark.anyio
    async def test_reads_complete_lines_and_waits_for_the_rest(self, tmp_path):
        """Complete lines go on; a half-written line waits for its newline."""
        batcher = RecordingBatcher()
        log = tmp_path / "app.log"
        log.write_text("one\ntwo\nthr")
        tailer = tailer_for(str(tmp_path / "*.log"), batcher)
        await pump(tailer)
        assert batcher.lines == ["one", "two"]
        append(log, "ee\n")
        await pump(tailer)
        assert batcher.lines == ["one", "two", "three"]
        assert tailer.checkpoint()[str(log)].offset == log.stat().st_size

    @pytest.mark.anyio
    async def test_rotation_drains_the_old_file_then_follows_the_new(self, tmp_path):
        """Lines written just before a rename are read from the old file, then the new file from 0."""
        batcher = RecordingBatcher()
        log = tmp_path / "app.log"
        log.write_text("a\n")
        tailer = tailer_for(str(log), batcher)
        await pump(tailer)
        append(log, "b\n")
        log.rename(tmp_path / "app.log.1")
        log.write_text("c\n")
        await pump(tailer)
        assert batcher.lines == ["a", "b", "c"]

    @pytest.mark.anyio
    async def test_rotated_name_matched_by_the_glob_is_not_read_again(self, tmp_path):
        """Under `app.log*`, the rotated `app.log.1` is the file already read: it is not shipped twice."""
        batcher = RecordingBatcher()
        log = tmp_path / "app.log"
        log.write_text("a\n")
        tailer = tailer_for(str(tmp_path / "app.log*"), batcher)
        await pump(tailer)
        log.rename(tmp_path / "app.log.1")
        log.write_text("b\n")
        await pump(tailer)
        tailer._last_glob = 0
        await pump(tailer)
        assert batcher.lines == ["a", "b"]

    @pytest.mark.anyio
    async def test_truncation_starts_over(self, tmp_path):
        """A file cut to a smaller size (copytruncate) is read again from its start."""
        batcher = RecordingBatcher()
        log = tmp_path / "app.log"
        log.write_text("first line\nsecond line\n")
        tailer = tailer_for(str(log), batcher)
        await pump(tailer)
        with log.open("w") as file:
            file.write("new\n")
        await pump(tailer)
        assert batcher.lines == ["first line", "second line", "new"]

    @pytest.mark.anyio
    async def test_resumes_at_the_saved_position(self, tmp_path):
        """A restart reads only what came after the saved offset of the same file."""
        batcher = RecordingBatcher()
        log = tmp_path / "app.log"
        log.write_text("old\nnew\n")
        stat = log.stat()
        saved = {str(log): Position(stat.st_dev, stat.st_ino, 4)}
        await pump(tailer_for(str(log), batcher, saved))
        assert batcher.lines == ["new"]

    @pytest.mark.anyio
    async def test_saved_position_of_another_file_is_ignored(self, tmp_path):
        """A file replaced while the shipper was down (other inode) is read from the start."""
        batcher = RecordingBatcher()
        log = tmp_path / "app.log"
        log.write_text("all\nof it\n")
        saved = {str(log): Position(0, 0, 4)}
        await pump(tailer_for(str(log), batcher, saved))
        assert batcher.lines == ["all", "of it"]

    def test_file_specs_name_their_service(self):
        """`service=glob` names the service of the glob's non-JSON lines; a bare glob uses the default."""
        specs = parse_file_specs(("gatewayz-api=/logs/api/*.log", "/logs/other.log"), "dflt")
        assert specs == [("/logs/api/*.log", "gatewayz-api"), ("/logs/other.log", "dflt")]
