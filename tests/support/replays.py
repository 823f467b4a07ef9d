"""Reading back the replay bytes `sim.replays.replay_bytes` writes."""

from __future__ import annotations

import json
import zlib


def read_replay(data: bytes) -> dict:
    return json.loads(zlib.decompress(data))
