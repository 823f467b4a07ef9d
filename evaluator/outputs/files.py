"""OUTPUT_URI as a path or file://: copy the finished run directory there."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from evaluator.outputs import OutputError
from evaluator.sources import path_of


def copy_run(run_dir: Path, output_uri: str) -> Path:
    """Copy to OUTPUT_URI/<run_name>, staged under a temporary name in the same directory, then renamed."""
    target = path_of(output_uri) / run_dir.name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{run_dir.name}."))
        shutil.copytree(run_dir, staging, dirs_exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except OSError as exc:
        raise OutputError(f"cannot copy results to {target}: {exc.strerror or exc}") from None
    return target
