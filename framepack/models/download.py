"""Fetching a model's files from the Hugging Face Hub before they are loaded, with
the bytes reported as they arrive.

A first start downloads about 40 GB, which takes from minutes to hours; the host's
page and the queued jobs' chat messages show how far it is. `DownloadReport` is
the seam: `download_sources` feeds it while the Hub library fetches the files, and
the worker passes it on to the store (framepack/worker/status.py); a test can feed
it directly. The bytes are read off the Hub cache's folder as its files grow,
not off the library's progress bars, whose shape changes between its versions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# (bytes downloaded so far, bytes to download in all); called from the loading thread
DownloadReport = Callable[[int, int], None]
POLL_SECONDS = 0.5  # between two looks at the cache folder


def download_sources(
    sources: Sequence[Any],
    *,
    cache_dir: str | None,
    report: DownloadReport,
    poll: float = POLL_SECONDS,
) -> None:
    """Download the files of the Hub `sources` (`framepack.models.loading.Source`) that
    the cache lacks, calling `report` as bytes arrive; local folders are skipped.

    Does nothing when every file is cached, or when the Hub cannot say what is
    missing (offline, a private repo, an older huggingface_hub): loading then
    reads or fetches the files itself and says what failed.
    """
    from huggingface_hub import snapshot_download

    wanted: list[tuple[str, str | None]] = []
    total = 0
    for source in sources:
        if Path(source.location).is_dir():
            continue
        pattern = f"{source.subfolder}/*" if source.subfolder else None
        try:
            infos = snapshot_download(
                source.location, allow_patterns=pattern, cache_dir=cache_dir, dry_run=True
            )
        except Exception as exc:  # loading will say what is wrong, with its own words
            log.debug("cannot plan the download of %s: %s", source, exc)
            return
        missing = [info for info in infos if info.will_download]
        if missing:
            wanted.append((source.location, pattern))
            total += sum(info.file_size or 0 for info in missing)
    if not wanted:
        return
    folders = {_blobs(cache_dir, repo) for repo, _ in wanted}
    log.info("downloading %.1f GB of model files", total / 1e9)
    watcher = _CacheWatcher(folders, total, report, poll)
    watcher.start()
    try:
        for repo, pattern in wanted:
            snapshot_download(repo, allow_patterns=pattern, cache_dir=cache_dir)
    finally:
        watcher.stop()
    report(total, total)


def _blobs(cache_dir: str | None, repo: str) -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.file_download import repo_folder_name

    root = Path(cache_dir) if cache_dir else Path(HF_HUB_CACHE)
    return root / repo_folder_name(repo_id=repo, repo_type="model") / "blobs"


def folder_bytes(folders: set[Path]) -> int:
    """Bytes of the files in `folders`, partial downloads (.incomplete) included."""
    size = 0
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                size += entry.stat().st_size
            except OSError:  # renamed into place meanwhile
                continue
    return size


class _CacheWatcher:
    """Reports the growth of the cache folders every `poll` seconds, on a thread."""

    def __init__(self, folders: set[Path], total: int, report: DownloadReport, poll: float) -> None:
        self.folders = folders
        self.total = total
        self.report = report
        self.poll = poll
        self.base = folder_bytes(folders)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="download-progress", daemon=True)

    def start(self) -> None:
        self.report(0, self.total)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.poll):
            grown = folder_bytes(self.folders) - self.base
            self.report(max(0, min(grown, self.total)), self.total)
