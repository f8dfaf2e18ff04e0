"""Where each tailed file was read up to, persisted beside the spool so a restart resumes there."""

from __future__ import annotations

from pathlib import Path

import msgspec

from log_shipper.spool import write_durably


class Position(msgspec.Struct, frozen=True, array_like=True):
    """A file's identity (device, inode) and the byte offset read and spooled so far."""

    device: int
    inode: int
    offset: int


_Positions = dict[str, Position]


class Positions:
    """A JSON file `{path: [device, inode, offset]}` written durably after the batch it describes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._decoder = msgspec.json.Decoder(_Positions)
        self._encoder = msgspec.json.Encoder()

    def load(self) -> dict[str, Position]:
        """What the last run saved; empty when nothing (or something unreadable) is there."""
        try:
            return self._decoder.decode(self.path.read_bytes())
        except (FileNotFoundError, msgspec.DecodeError):
            return {}

    def save(self, positions: dict[str, Position]) -> None:
        """Replace the file durably (the caller syncs the folder)."""
        write_durably(self.path, self._encoder.encode(positions))
