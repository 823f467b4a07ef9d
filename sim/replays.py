"""Replays in mettagrid's format (what MettaScope reads), as bytes that can travel back to the driver."""

from __future__ import annotations

import json
import zlib

from mettagrid.simulator.replay_log_writer import EpisodeReplay

REPLAY_SUFFIX = ".json.z"


def replay_bytes(replay: EpisodeReplay) -> bytes:
    """zlib-compressed replay JSON, byte-identical to what mettagrid's `write_replay(path.json.z)` writes."""
    return zlib.compress(json.dumps(replay.get_replay_data()).encode("utf-8"))
