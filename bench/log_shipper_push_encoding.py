"""Push encoding, in-process: CPU per line and bytes per line of snappy protobuf against gzip JSON.

The shipper's own code on the gateway-shaped lines of bench/log_shipper_throughput.py: parse each 1 MiB
block into a batch (the protobuf parser encodes each entry as it files it), seal the segment, compress the
push body; and, for the receiving side, decompress it (what Loki does first: snappy or gzip) and decode
it (JSON with msgspec; protobuf with the `protobuf` package). Variants alternate within each round;
medians (min-max).
Also times building the same PushRequest with the `protobuf` package (upb), the library the hand-written
encoder replaces.

    uv run python bench/log_shipper_push_encoding.py --lines 300000 --rounds 5
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cramjam
import msgspec
from log_shipper_throughput import write_lines

from log_shipper.batch import Batch, push_parts
from log_shipper.labels import StreamLabels
from log_shipper.loki import gzip_parts, snappy_parts
from log_shipper.parser import LineParser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.logproto import PushRequest

BLOCK_BYTES = 1024 * 1024


def blocks(path: Path) -> list[bytes]:
    """The file in complete-line blocks of about 1 MiB, as the tailer hands them on."""
    data = path.read_bytes()
    out, start = [], 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + BLOCK_BYTES)
        end = len(data) if end <= start else end
        out.append(data[start:end])
        start = end + 1
    return out


def ship(variant: str, chunks: list[bytes]) -> tuple[float, list[bytes]]:
    """CPU seconds to parse, seal and compress every block; the compressed bodies."""
    parser = LineParser(StreamLabels("bench", {}, "unknown_service"), 262_144, protobuf=variant == "protobuf")
    encoder = msgspec.json.Encoder()
    bodies = []
    started = time.process_time()
    for chunk in chunks:
        batch = Batch()
        parser.parse(chunk, "unknown_service", batch)
        if variant == "protobuf":
            bodies.append(snappy_parts(push_parts([batch.encode_protobuf()])))
        else:
            bodies.append(gzip_parts(push_parts([batch.encode(encoder)])))
    return time.process_time() - started, bodies


def receive(variant: str, bodies: list[bytes]) -> tuple[float, float]:
    """CPU seconds to decompress every body, and to decompress and decode it."""
    started = time.process_time()
    raws = [
        bytes(cramjam.snappy.decompress_raw(body)) if variant == "protobuf" else gzip.decompress(body)
        for body in bodies
    ]
    decompressed = time.process_time() - started
    for raw in raws:
        if variant == "protobuf":
            PushRequest().ParseFromString(raw)
        else:
            msgspec.json.decode(raw)
    return decompressed, time.process_time() - started


def upb_build(chunks: list[bytes]) -> float:
    """CPU seconds to build and serialise the PushRequests with the `protobuf` package instead."""
    parser = LineParser(StreamLabels("bench", {}, "unknown_service"), 262_144)
    started = time.process_time()
    for chunk in chunks:
        batch = Batch()
        parser.parse(chunk, "unknown_service", batch)
        request = PushRequest()
        for buffer in batch.streams.values():
            stream = request.streams.add(labels=buffer.labels.decode())
            for ts, line in buffer.values:
                entry = stream.entries.add(line=line)
                entry.timestamp.seconds, entry.timestamp.nanos = divmod(int(ts), 1_000_000_000)
        request.SerializeToString()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="push-encoding-") as tmp:
        path = Path(tmp) / "lines.ndjson"
        write_lines(path, args.lines)
        chunks = blocks(path)
    rows: dict[str, list[dict[str, float]]] = {"protobuf": [], "json": []}
    upb: list[float] = []
    for round_ in range(args.rounds):
        for variant in ("protobuf", "json") if round_ % 2 == 0 else ("json", "protobuf"):
            cpu, bodies = ship(variant, chunks)
            decompress, decode = receive(variant, bodies)
            rows[variant].append(
                {
                    "ship_us": cpu / args.lines * 1e6,
                    "bytes": sum(map(len, bodies)) / args.lines,
                    "decompress_us": decompress / args.lines * 1e6,
                    "decode_us": decode / args.lines * 1e6,
                }
            )
        upb.append(upb_build(chunks) / args.lines * 1e6)
    print(f"{args.lines} lines in {len(chunks)} blocks; medians (min-max) of {args.rounds} rounds, per line")
    print("variant    parse+encode+compress µs   wire bytes   receiver decompress µs   decompress+decode µs")
    for variant, runs in rows.items():
        cells = []
        for key in ("ship_us", "bytes", "decompress_us", "decode_us"):
            values = [run[key] for run in runs]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"{variant:9s}  " + "   ".join(f"{cell:>22s}" for cell in cells))
    print(f"protobuf package (upb) building the same PushRequests: {statistics.median(upb):.2f} µs a line")


if __name__ == "__main__":
    main()
