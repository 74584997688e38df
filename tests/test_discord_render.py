"""A job's view laid out as a Discord message: within Discord's limits, the
prompt cut before any fact, files only when they exist and fit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bot.discord.render import DESCRIPTION_LIMIT, discord_message
from bot.progress import render
from storage.records import Job, JobParams, JobStatus


def job(tmp_path: Path, **changes: object) -> Job:
    picture = tmp_path / "in.png"
    picture.write_bytes(b"\x89PNG picture")
    base = Job(
        id=12,
        platform="discord",
        user_id="1",
        user_name="alice",
        chat_id="2",
        params=JobParams(prompt="a cat", seed=77),
        input_path=str(picture),
        end_image_path=None,
        status=JobStatus.QUEUED,
        attempts=0,
        worker_id=None,
        queued_at=0.0,
        started_at=None,
        heartbeat_at=None,
        finished_at=None,
        cancel_requested=False,
        upload_limit=1000,
        result_path=None,
        delivery_path=None,
        error=None,
        delivered_at=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_long_prompt_is_cut_and_the_facts_stay(tmp_path: Path) -> None:
    long = job(tmp_path, params=JobParams(prompt="*bold* cat " * 800, seed=77))
    message = discord_message(long, render(long, tiny=True))
    description = message.embed["description"]
    assert len(description) <= DESCRIPTION_LIMIT
    assert "seed 77" in description and "random noise" in description
    assert "…" in description and "\\*bold\\*" in description  # markdown shown as typed
    assert message.embed["footer"]["text"] == "Job #12 · alice"


def test_the_input_picture_shows_in_the_embed_and_unchanged_views_have_one_digest(
    tmp_path: Path,
) -> None:
    queued = job(tmp_path)
    first = discord_message(queued, render(queued))
    again = discord_message(queued, render(queued))
    assert first.file is not None and first.file.name == "picture-12.png"
    assert first.embed["image"]["url"] == "attachment://picture-12.png"
    assert first.digest() == again.digest()
    assert first.state() == {"digest": first.digest(), "file": first.file.key}
    assert [action for _, action in first.buttons] == ["cancel"]


def test_a_video_over_the_limit_is_not_attached_and_the_message_says_why(tmp_path: Path) -> None:
    video = tmp_path / "final.mp4"
    video.write_bytes(b"\x00" * 5000)
    done = job(tmp_path, status=JobStatus.DONE, result_path=str(video), finished_at=1.0)
    message = discord_message(done, render(done))
    assert message.file is None
    assert "more than this server takes" in message.embed["description"]
    assert [action for _, action in message.buttons] == ["reroll", "extend", "remix", "delete"]

    fits = dataclasses.replace(done, upload_limit=5000)
    sent = discord_message(fits, render(fits))
    assert sent.file is not None and sent.file.name == "framepack-12.mp4"
    assert "image" not in sent.embed, "a video is an attachment of its own, not the embed's"


def test_a_missing_file_leaves_the_text_alone(tmp_path: Path) -> None:
    gone = job(tmp_path, input_path=str(tmp_path / "removed.png"))
    message = discord_message(gone, render(gone))
    assert message.file is None and "image" not in message.embed
    assert message.embed["title"].startswith("⏳ Queued")


def test_the_step_cache_shows_in_the_embed_and_the_caption_when_on(tmp_path: Path) -> None:
    from bot.progress import JobProgress
    from bot.telegram.render import caption

    params = JobParams(prompt="a cat", seed=77, cache="teacache", cache_threshold=0.1)
    chosen = job(tmp_path, params=params)
    description = discord_message(chosen, render(chosen)).embed["description"]
    assert "framepack · teacache 0.1" in description
    assert "framepack · teacache 0.1" in caption(render(chosen), 12)
    off = job(tmp_path, params=JobParams(prompt="a cat", seed=77, cache="off"))
    assert "cache" not in caption(render(off), 12)
    # a job that left it to the host: the done event says which cache it ran with
    done = job(tmp_path, status=JobStatus.DONE, finished_at=1.0)
    view = render(done, JobProgress(done={"cache": "magcache 0.1"}))
    assert "framepack · magcache 0.1" in discord_message(done, view).embed["description"]
    assert "framepack · magcache 0.1" in caption(view, 12)
