"""Read the records of a wandb `.wandb` transaction log, for tests that check offline runs.

The file is a 7-byte header (b":W&B", magic, version) followed by a LevelDB-format log
(32 KiB blocks of records: crc32c, little-endian length, type FULL/FIRST/MIDDLE/LAST)
whose payloads are `wandb_internal_pb2.Record` protobufs. wandb >= 0.20 ships no Python
reader for it, so the tests carry this one.
"""

from __future__ import annotations

from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb log")
    payloads, partial, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a record header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            partial = chunk
        elif kind == MIDDLE:
            partial += chunk
        elif kind == LAST:
            payloads.append(partial + chunk)
    return [wandb_internal_pb2.Record.FromString(p) for p in payloads]


def history_and_config(path: Path) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The logged history rows (key -> JSON value) and the config (key -> JSON value)."""
    rows, config = [], {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
        elif kind == "config":
            config.update({item.key: item.value_json for item in record.config.update})
        elif kind == "run":
            config.update({item.key: item.value_json for item in record.run.config.update})
    return rows, config
