"""The Discord adapter against the fake Discord: discord.py's own HTTP client,
gateway, command tree and view store; the real bot process (`run_bots`), store
and tracker; a stand-in worker writing the real worker's events and files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from framepack.video.encode import encode_mp4
from framepack.video.probe import probe
from storage.files import poster_of
from storage.records import JobStatus
from tests.discord_scene import Scene, discord_scene, embed_text, png


@pytest.fixture
async def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Scene]:
    async with discord_scene(tmp_path, monkeypatch) as scene:
        await scene.start()
        yield scene


async def test_commands_appear_in_the_allowed_guild_only(scene: Scene) -> None:
    fake = scene.discord
    assert set(fake.commands(scene.guild)) == {
        "animate", "queue", "status", "help", "cancel", "pause", "resume", "ban", "unban", "limit",
        "loras",
    }  # fmt: skip
    assert fake.commands() == {}, "nothing global: guild commands appear at once"
    animate = fake.commands(scene.guild)["animate"]
    options = {o["name"]: o for o in animate["options"]}
    assert options["image"]["type"] == 11 and options["image"]["required"]
    assert options["end_image"]["type"] == 11 and not options["end_image"].get("required")
    assert options["seconds"]["max_value"] == scene.settings.generation.max_seconds
    assert options["steps"]["max_value"] == scene.settings.generation.max_steps
    assert [c["value"] for c in options["model"]["choices"]] == ["framepack", "f1"]


async def test_animate_goes_queued_rendering_partial_video_finished_video(scene: Scene) -> None:
    fake = scene.discord
    reply = await scene.animate(prompt="a red square spins slowly")

    assert reply.thinking and reply.ephemeral and reply.ack_seconds is not None
    assert reply.ack_seconds < 3
    [job] = await scene.jobs()
    assert job.status is JobStatus.QUEUED and job.upload_limit == 10 * 1024 * 1024
    message = scene.job_message(job.id)
    assert reply.replies[0].content.startswith(f"✅ Queued as job #{job.id}.")
    assert f"/{scene.channel.id}/{message.id}" in reply.replies[0].content
    ref = await scene.store.message(job.id, "discord")
    assert ref is not None and (ref.chat_id, ref.message_id) == (
        str(scene.channel.id),
        str(message.id),
    )

    # queued: the picture, the prompt, the facts, a cancel button
    assert message.embed is not None
    assert message.embed["title"].startswith("⏳ Queued · position 1")
    assert "a red square spins slowly" in message.embed["description"]
    assert f"seed {job.params.seed}" in message.embed["description"]
    assert "random noise" in message.embed["description"]  # the tiny preset says so
    picture = message.embed_image()
    assert picture is not None and not isinstance(picture, str)
    assert picture.filename == f"picture-{job.id}.jpg" and picture.image_size == (96, 64)
    assert message.custom_ids == [f"fpb:cancel:{job.id}"]

    # rendering: bar, section and step, the preview picture
    running = await scene.worker.claim()
    await scene.worker.started(running, sections=2, steps=2)
    preview = await scene.worker.step(running, 0, 1)
    await scene.wait_for(lambda: "section 1/2 · step 1/2" in embed_text(message), "the first step")
    assert message.embed["title"].startswith("🎞 Rendering ▰▰▰")
    shown = message.embed_image()
    assert shown is not None and not isinstance(shown, str)
    assert shown.data == preview.read_bytes()

    # a partial video after the first section
    partial = await scene.worker.section(running, 0)
    await scene.wait_for(
        lambda: [a.filename for a in message.attachments] == [f"framepack-{job.id}-partial.mp4"],
        "the partial video",
    )
    assert message.attachment(f"framepack-{job.id}-partial.mp4").data == partial.read_bytes()
    assert message.custom_ids == [f"fpb:cancel:{job.id}"]

    # the finished video, with prompt, seed and timings, re-roll and delete
    done = await scene.worker.done(running)
    await scene.wait_for(lambda: message.embed["title"] == "✅ Done", "the finished video")
    final = message.attachment(f"framepack-{job.id}.mp4")
    assert final.data == Path(done.delivery_path or "").read_bytes()
    description = message.embed["description"]
    assert "a red square spins slowly" in description and f"seed {job.params.seed}" in description
    assert "rendered in 12 s" in description
    assert message.custom_ids == [
        f"fpb:{action}:{job.id}" for action in ("reroll", "extend", "remix", "delete")
    ]
    assert (await scene.wait_delivered(job.id)).delivered_at is not None

    edits = fake.requests_to("PATCH", f"/channels/{scene.channel.id}/messages/{message.id}")
    assert edits and {r.auth for r in edits} == {"bot"}
    assert message.unchanged_edits == 0
    assert len(scene.channel.messages) == 1


async def test_a_slow_download_does_not_delay_the_acknowledgement(scene: Scene) -> None:
    scene.discord.download_delay = 4.0  # seconds of the fake's clock per CDN download
    reply = await scene.animate()
    assert reply.thinking and not reply.failed and (reply.ack_seconds or 0) < 3
    assert reply.replies[0].content.startswith("✅ Queued as job #1.")


async def test_a_job_finishing_after_the_interaction_token_expired_is_delivered(
    scene: Scene,
) -> None:
    fake = scene.discord
    reply = await scene.animate()
    message = scene.job_message(1)
    job = await scene.worker.claim()
    await scene.worker.started(job)

    fake.advance(16 * 60)  # the interaction token is dead now
    assert reply.token_expired()
    await scene.worker.render_all(job)

    await scene.wait_for(lambda: message.embed["title"] == "✅ Done", "the finished video")
    assert message.attachment("framepack-1.mp4").size > 0
    await scene.wait_delivered(1)
    assert reply.webhook_errors == [], "nothing after the answer used the interaction token"


async def test_a_job_finished_while_the_bot_was_down_is_delivered_when_it_starts(
    scene: Scene,
) -> None:
    await scene.animate()
    message = scene.job_message(1)
    job = await scene.worker.claim()
    await scene.stop()
    await scene.worker.render_all(job)

    await scene.start()
    await scene.wait_for(lambda: message.embed["title"] == "✅ Done", "the finished video")
    assert message.attachment("framepack-1.mp4").size > 0
    await scene.wait_delivered(1)
    await scene.restart()  # and once more: delivered once, whatever the restarts
    await scene.settled()
    titles = [s.embeds[0]["title"] for s in message.history if s.embeds]
    assert titles.count("✅ Done") == 1, titles

    await scene.discord.reconnect_gateway()  # Discord drops the gateway now and then
    reply = await scene.animate()
    assert reply.replies[0].content.startswith("✅ Queued as job #2.")


async def test_buttons_work_after_a_restart_and_refuse_other_users(scene: Scene) -> None:
    fake = scene.discord
    await scene.animate()
    first = scene.job_message(1)
    await scene.worker.render_all(await scene.worker.claim())
    await scene.wait_delivered(1)

    await scene.restart()
    assert len(scene.adapters) == 2

    refused = await fake.press(scene.bob, first, "fpb:reroll:1")
    assert refused.ephemeral
    assert [m.content for m in refused.replies] == [
        "Only the person who asked for that video (or an admin) can do that."
    ]
    refused = await fake.press(scene.bob, first, "fpb:delete:1")
    assert refused.ephemeral and not first.deleted
    assert len(await scene.jobs()) == 1

    rerolled = await fake.press(scene.alice, first, "fpb:reroll:1")
    text = await scene.answered(rerolled)
    assert rerolled.ephemeral and text.startswith("🎲 Re-rolled as job #2 (seed ")
    second = scene.job_message(2)
    [_, job2] = await scene.jobs()
    assert job2.status is JobStatus.QUEUED and job2.origin["reroll_of"] == 1
    assert job2.input_path == (await scene.job(1)).input_path
    assert second.embed is not None and second.embed["title"].startswith("⏳ Queued")

    refused = await fake.press(scene.bob, second, "fpb:cancel:2")
    assert refused.ephemeral and (await scene.job(2)).status is JobStatus.QUEUED
    cancelled = await fake.press(scene.alice, second, "fpb:cancel:2")
    assert [m.content for m in cancelled.replies] == ["Job #2 is cancelled."]
    await scene.wait_for(lambda: second.embed["title"] == "✖ Cancelled", "the cancelled job")
    assert second.custom_ids == ["fpb:reroll:2", "fpb:remix:2", "fpb:delete:2"]  # it can go too

    deleted = await fake.press(scene.mod, first, "fpb:delete:1")  # an admin may
    assert deleted.deferred and deleted.replies == []
    await scene.wait_for(lambda: first.deleted, "the deleted message")
    assert scene.channel.messages == [second]


async def test_every_kind_of_bad_input_gets_an_ephemeral_explanation_and_no_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_scene(tmp_path, monkeypatch) as scene:
        scene.settings = _with_generation(
            scene, max_image_bytes=200_000, max_image_pixels=2_000_000
        )
        await scene.start()
        fake = scene.discord
        gif = _animated_gif()
        cases: list[tuple[str, dict, str]] = [
            ("not a picture", {"picture": b"just some text"}, "not a picture I can read"),
            ("corrupt", {"picture": png()[:60]}, "damaged"),
            (
                "too many bytes",
                {"picture": b"\x89PNG" + bytes(300_000)},
                "is 300 kB; the most is 200 kB",
            ),
            ("too many pixels", {"picture": png((2000, 1200))}, "megapixels"),
            ("too small", {"picture": png((8, 8))}, "at least 32 pixels"),
            ("animated", {"picture": gif}, "animated"),
            ("blank prompt", {"prompt": "   "}, "Say what should happen"),
            ("long prompt", {"prompt": "x" * 1001, "validate": False}, "the most is 1000"),
            ("seconds", {"seconds": 600.0, "validate": False}, "--seconds must be between"),
            ("steps", {"steps": 0, "validate": False}, "--steps must be between"),
            ("guidance", {"guidance": 99.0, "validate": False}, "--guidance must be between"),
            ("model", {"model": "sdxl", "validate": False}, "--model must be framepack or f1"),
            ("cache", {"cache": "fast", "validate": False}, "--cache must be off, teacache or"),
        ]
        for name, options, expected in cases:
            reply = await scene.animate(**options)
            text = reply.replies[0].content
            assert reply.ephemeral, name
            assert expected in text, f"{name}: {text!r}"

        end = fake.upload(png(), "end.png")
        reply = await fake.slash(
            scene.alice, scene.channel, "animate",
            image=fake.upload(png(), "a.png"), prompt="a cat", model="f1", end_image=end,
        )  # fmt: skip
        assert "end image works with --model framepack only" in await scene.answered(reply)

        reply = await fake.slash(
            scene.alice, scene.channel, "animate",
            image=fake.upload(png(), "a.png"), prompt="a cat",
            end_image=fake.upload(b"not a picture", "end.png"),
        )  # fmt: skip
        assert "Send a PNG, JPEG or WebP end image" in await scene.answered(reply)

        expired = fake.upload(png(), "old.png", expires_after=60)
        fake.advance(61)
        reply = await fake.slash(
            scene.alice, scene.channel, "animate", image=expired, prompt="a cat"
        )
        assert "could not fetch the picture" in await scene.answered(reply)

        assert await scene.jobs() == []
        assert scene.channel.messages == []
        assert list(scene.data.inputs.iterdir()) == [], "no picture kept for a refused job"


async def test_an_end_image_goes_with_the_job(scene: Scene) -> None:
    fake = scene.discord
    reply = await fake.slash(
        scene.alice, scene.channel, "animate",
        image=fake.upload(png(), "start.png"), prompt="a red square turns blue",
        end_image=fake.upload(png(colour=(20, 20, 220)), "end.png"), seconds=2.5, seed=42,
        steps=10, guidance=6.5, model="framepack", cache="teacache",
    )  # fmt: skip
    assert (await scene.answered(reply)).startswith("✅ Queued as job #1.")
    job = await scene.job(1)
    assert (job.params.seconds, job.params.seed, job.params.steps) == (2.5, 42, 10)
    assert (job.params.guidance, job.params.model) == (6.5, "framepack")
    assert (job.params.cache, job.params.cache_threshold) == ("teacache", 0.15)
    assert job.end_image_path and Path(job.end_image_path).exists()
    assert "seed 42 · 2.5 s · 10 steps · framepack · teacache" in embed_text(scene.job_message(1))


async def test_a_video_over_the_upload_limit_arrives_re_encoded_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_scene(tmp_path, monkeypatch) as scene:
        limit = 150_000
        scene.guild.upload_limit = limit
        await scene.start()
        await scene.animate()
        job = await scene.worker.claim()
        assert job.upload_limit == limit, "the limit the interaction reported is recorded"
        await scene.worker.started(job)
        done = await scene.worker.done(job, frames=60, side=128, crf=18)

        assert done.result_path and Path(done.result_path).stat().st_size > limit
        message = scene.job_message(job.id)
        await scene.wait_for(lambda: message.embed["title"] == "✅ Done", "the finished video")
        sent = message.attachment(f"framepack-{job.id}.mp4")
        assert sent.size <= limit
        received = tmp_path / "received.mp4"
        received.write_bytes(sent.data)
        assert probe(received).frames == 60, "the same video, re-encoded"
        assert sent.data == Path(done.delivery_path or "").read_bytes()


def _with_generation(scene: Scene, **values: int):  # type: ignore[no-untyped-def]
    import dataclasses

    generation = dataclasses.replace(scene.settings.generation, **values)
    return dataclasses.replace(scene.settings, generation=generation)


def _animated_gif() -> bytes:
    import io

    from PIL import Image

    frames = [Image.new("RGB", (64, 64), (i * 60, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()


async def test_extend_and_remix_open_forms_whose_jobs_queue(scene: Scene) -> None:
    fake = scene.discord
    await scene.animate(prompt="a red square spins", seed=3)
    first = scene.job_message(1)
    await scene.worker.render_all(await scene.worker.claim())
    await scene.wait_delivered(1)

    refused = await fake.press(scene.bob, first, "fpb:extend:1")
    assert refused.modal is None and refused.ephemeral  # not Bob's video: no form

    shown = await fake.press(scene.alice, first, "fpb:extend:1")
    assert shown.modal is not None and shown.modal["title"] == "Extend job #1"
    submitted = await fake.submit(scene.alice, shown, {"seconds": "1.5", "prompt": "it stops"})
    assert (await scene.answered(submitted)).startswith("⏩ Extending as job #2")

    shown = await fake.press(scene.alice, first, "fpb:remix:1")
    assert shown.modal is not None and shown.modal["title"] == "Remix job #1"
    bad = await fake.submit(scene.alice, shown, {"prompt": "a blue square", "seed": "many"})
    assert await scene.answered(bad) == "The seed must be a whole number, not 'many'."
    shown = await fake.press(scene.alice, first, "fpb:remix:1")
    submitted = await fake.submit(scene.alice, shown, {"prompt": "a blue square spins"})
    assert (await scene.answered(submitted)).startswith("🎨 Remixed as job #3")

    _, extended, remixed = await scene.jobs()
    assert extended.params.extend_of == 1 and extended.params.seconds == 1.5
    assert extended.params.prompt == "it stops"
    assert remixed.params.prompt == "a blue square spins" and remixed.params.seed == 3
    assert remixed.input_path == extended.input_path == (await scene.job(1)).input_path
    await scene.restart()  # the buttons of messages sent before a restart still work
    shown = await fake.press(scene.alice, first, "fpb:extend:1")
    assert shown.modal is not None
    for job_id in (2, 3):  # both videos arrive, each in its job's message
        await scene.worker.render_all(await scene.worker.claim())
        await scene.wait_delivered(job_id)
        assert scene.job_message(job_id).attachment(f"framepack-{job_id}.mp4").size > 0


async def test_a_video_attachment_is_continued(scene: Scene, tmp_path: Path) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (30, 96, 128, 3), dtype=np.uint8)
    video = encode_mp4(frames, tmp_path / "clip.mp4").read_bytes()
    attachment = scene.discord.upload(video, "clip.mp4", content_type="video/mp4")
    reply = await scene.discord.slash(
        scene.alice, scene.channel, "animate", image=attachment, prompt="it goes on"
    )
    assert (await scene.answered(reply)).startswith("✅ Queued as job #1")
    job = await scene.job(1)
    assert job.input_path.endswith(".mp4") and poster_of(job.input_path).exists()
    message = scene.job_message(1)
    assert message.attachments and message.attachments[0].filename.endswith(".jpg")
