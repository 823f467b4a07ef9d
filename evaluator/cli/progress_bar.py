"""The CLI's progress bar: episodes done out of episodes to play, drawn on stderr from the driver's
`on_progress(done, total)` callback (the driver itself draws nothing)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class EpisodeProgressBar:
    """A rich progress bar usable as the driver's `on_progress`; shown from the first call to `close`."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("evaluating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("episodes"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("evaluating", total=total)
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()

    def __enter__(self) -> EpisodeProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
