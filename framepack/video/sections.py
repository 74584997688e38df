"""Each section's playable video, written while the next section samples.

After every section the whole video so far is encoded again (the inverted sampler
changes its start, and the last frames of each section are still blended into by
the next), which on a long job costs seconds. Encoding is ffmpeg's work on the
CPU while the GPU samples, so it runs in a background thread, one at a time, with
x264's `veryfast` preset (a preview, replaced a section later); the final video
is encoded once more at full effort. A section's `Section` event is handed out
when its file is complete: possibly after the first steps of the next section.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from framepack.engine.events import Section
from framepack.video.encode import encode_mp4

PARTIAL_PRESET = "veryfast"  # about 4x faster than "medium", files a little larger
FINAL_PRESET = "medium"


class SectionVideos:
    def __init__(self, *, fps: int, crf: int, metadata: Mapping[str, str]) -> None:
        self._encode = {"fps": fps, "crf": crf, "metadata": dict(metadata)}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="section-video")
        self._pending: tuple[Future[Path], Section] | None = None

    def start_partial(self, frames: np.ndarray, event: Section) -> None:
        """Begin writing `frames` to `event.video`; the previous write must be collected."""
        assert self._pending is None, "collect the previous section's video first"
        future = self._pool.submit(
            encode_mp4, frames, event.video, preset=PARTIAL_PRESET, **self._encode
        )
        self._pending = (future, event)

    def ready(self) -> list[Section]:
        """The event of the video in progress if it is complete now (errors re-raised)."""
        if self._pending is None or not self._pending[0].done():
            return []
        return self.wait()

    def wait(self) -> list[Section]:
        """The event of the video in progress, once it is complete."""
        if self._pending is None:
            return []
        future, event = self._pending
        self._pending = None
        future.result()
        return [event]

    def write_final(self, frames: np.ndarray, path: Path) -> Path:
        return encode_mp4(frames, path, preset=FINAL_PRESET, **self._encode)

    def close(self) -> None:
        """Let a write in progress finish (no file is left half written), then stop."""
        self._pool.shutdown(wait=True)
