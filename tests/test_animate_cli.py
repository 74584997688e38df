"""`framepack-bot animate` end to end, as a user runs it: a subprocess on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from framepack.engine.params import GenerationParams
from framepack.video.probe import probe
from tests.engine_fixtures import picture, run_job

REPO = Path(__file__).resolve().parents[1]


def animate(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",  # the tiny model must not need the network
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "framepack_bot.cli", "animate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


@pytest.mark.slow  # a fresh Python that imports torch and renders: ~10 s
def test_animate_renders_a_video_with_the_tiny_model(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    picture(200, 300).save(image)
    output = tmp_path / "out" / "cat.mp4"
    result = animate(
        image, "--prompt", "a cat walks", "--model", "tiny", "--seconds", "2", "--steps", "2",
        "--seed", "42", "--output", output, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{output}  (seed 42)" in result.stdout
    assert "random weights" in result.stdout
    info = probe(output)
    assert info.frames == 73 and info.fps == 30
    assert (info.width, info.height) == (160, 96)  # 3:2 -> the 640 list's 768x512, scaled
    assert info.metadata["seed"] == "42" and info.metadata["model"] == "tiny"
    assert info.metadata["cache"] == "magcache 0.1"  # the config's default step cache
    assert sorted(p.name for p in output.parent.iterdir()) == ["cat.mp4"]  # work folder removed

    # a video in place of the picture is continued: the output is it, then the new part
    longer = tmp_path / "out" / "longer.mp4"
    result = animate(
        output, "--prompt", "the cat sits", "--model", "tiny", "--seconds", "1", "--steps", "2",
        "--output", longer, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert probe(longer).frames == 73 + 36 and probe(longer).metadata["seconds"] == "3.63"
    missing = animate(tmp_path / "gone.mp4", "--prompt", "x", "--model", "tiny", "--output",
                      longer, cwd=tmp_path)  # fmt: skip
    assert (
        missing.returncode == 2 and "video" in missing.stderr and "no such file" in missing.stderr
    )


@pytest.mark.slow
def test_animate_takes_real_cfg_and_writes_lossless_frames(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    picture(200, 300).save(image)
    output, frames = tmp_path / "cat.mp4", tmp_path / "frames"
    result = animate(
        image, "--prompt", "a cat walks", "--model", "tiny", "--seconds", "1", "--steps", "2",
        "--seed", "42", "--cfg", "2", "--negative-prompt", "blurry", "--frames", frames,
        "--cache", "off", "--output", output, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert probe(output).metadata["cfg"] == "2"
    assert probe(output).metadata["negative_prompt"] == "blurry"
    assert "cache" not in probe(output).metadata
    written = sorted(frames.iterdir())
    assert [p.name for p in written[:2]] == ["frame_00000.png", "frame_00001.png"]
    assert len(written) == 37
    # the PNGs are the engine's frames exactly: the same job, in this process
    params = GenerationParams(
        prompt="a cat walks", seconds=1.0, steps=2, seed=42, cfg=2.0, negative_prompt="blurry",
        sampler="inverted", resolution=128,
    )  # fmt: skip
    run = run_job(tmp_path / "work", params, Image.open(image))
    assert run.frames is not None
    assert np.array_equal(np.stack([np.asarray(Image.open(p)) for p in written]), run.frames)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "f1", "--end-image", "IMAGE"], "end image needs the inverted sampler"),
        (["--model", "tiny", "--steps", "0"], "steps must be"),
        (["--model", "tiny", "--cfg", "0.5"], "cfg must be"),
        (["--model", "tiny", "--cache-threshold", "0"], "cache threshold must be a number above 0"),
        (["--model", "tiny", "--cache", "fast"], "invalid choice: 'fast'"),
        (["--model", "tiny", "--end-image", "missing.png"], "end image missing.png: no such file"),
    ],
)
def test_animate_explains_bad_input_without_loading_a_model(
    tmp_path: Path, args: list[str], message: str
) -> None:
    image = tmp_path / "cat.png"
    picture().save(image)
    args = [str(image) if a == "IMAGE" else a for a in args]
    result = animate(image, "--prompt", "x", "--output", tmp_path / "o.mp4", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "loading" not in result.stderr
