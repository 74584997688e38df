"""Continuing a video: a finished job of ours ("extend") or a video a member sent.

What a job that continues a video takes from it:

- its frames, all of them, at the job's bucket and 30 frames a second: the
  delivered video is the whole clip, these frames and then the new ones. They go
  into the new MP4 as they are (a blend across the seam would change frames the
  member has already seen), so an extension's first frames are its source's up
  to the codec.
- the latents of its last frames, which the new sections continue from. Our own
  job's come from its checkpoint, the very latents it was rendered from: exact,
  nothing is encoded again. A sent video's last frames are VAE-encoded in one
  call: diffusers' framewise encoding runs the causal VAE over overlapping
  batches of 16 frames and blends them, so it never restarts at a boundary.
- F1 (forward) reads them as the history its context comes from, as though it
  had rendered them itself; its start frame (the clean frame 0 every section
  sees) stays the clip's first frame.
- the inverted model (FramePack), as FramePack-Studio's video model: the clip's
  last latent frame is the clean "pre" frame every section sees (the start image
  of a fresh job), so the new part is rendered backwards from its end towards the
  clip's last frame and follows it. The clip's last latents before it are the
  causal VAE's context when the seam is decoded.

The SigLIP picture every section is conditioned on is the frame the start latent
is: the clip's first (F1) or last (inverted) frame.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from framepack.engine.buckets import find_nearest_bucket
from framepack.engine.checkpoint import read_checkpoint
from framepack.engine.conditioning import encode_latent, image_to_tensor
from framepack.engine.history import CONTEXT
from framepack.models.components import Components
from framepack.video.ffmpeg import VideoError
from framepack.video.probe import probe, read_clip, read_frames

FPS = 30  # FramePack renders 30 frames a second; a sent video is resampled to it


class SourceUnreadable(ValueError):
    """The video a job continues cannot be read or continued (the message says why)."""


@dataclass(frozen=True)
class VideoSource:
    """A video a job continues."""

    video: Path
    # Our own finished job's checkpoint: its latents continue exactly. None: a video
    # from elsewhere, whose last frames are VAE-encoded.
    checkpoint: Path | None = None

    def size(self, resolution: int) -> tuple[int, int]:
        """(height, width) of the job: our own video's size, or a sent video's bucket."""
        try:
            info = probe(self.video)
        except (VideoError, OSError) as exc:
            raise SourceUnreadable(f"the video cannot be read ({exc})") from None
        if self.checkpoint is not None:
            return info.height, info.width
        return find_nearest_bucket(info.height, info.width, resolution=resolution)


@dataclass(frozen=True)
class Continuation:
    frames: np.ndarray  # (N, H, W, 3) uint8: the clip the video starts with
    latents: torch.Tensor  # (1, C, T, h, w) float32: its last T <= 19 latent frames
    first: torch.Tensor  # (1, C, 1, h, w) float32: the latent of its first frame
    key: bytes  # what the job's fingerprint takes of it

    @property
    def last_frame(self) -> np.ndarray:
        return self.frames[-1]


def frames_of_latents(latents: int) -> int:
    """Frames a causal decode of `latents` latent frames gives (1, then 4 per frame)."""
    return 1 + 4 * (latents - 1) if latents > 0 else 0


@torch.no_grad()
def load_continuation(
    components: Components,
    source: VideoSource,
    *,
    height: int,
    width: int,
    device: torch.device,
) -> Continuation:
    """What a job continuing `source` at `height` x `width` needs of it.

    Raises `SourceUnreadable` when the video cannot be continued: unreadable, no
    frames, or a checkpoint of another size or version."""
    try:
        return _load(components, source, height=height, width=width, device=device)
    except (VideoError, OSError, SafetensorError, ValueError) as exc:
        if isinstance(exc, SourceUnreadable):
            raise
        raise SourceUnreadable(f"the video cannot be continued ({exc})") from None


def _load(
    components: Components,
    source: VideoSource,
    *,
    height: int,
    width: int,
    device: torch.device,
) -> Continuation:
    digest = hashlib.sha256()
    with source.video.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if source.checkpoint is not None:
        frames = read_frames(source.video)
        saved = read_checkpoint(source.checkpoint)
        latents = saved.real()[:, :, -CONTEXT:].float()
        if tuple(latents.shape[3:]) != (height // 8, width // 8):
            raise SourceUnreadable("its checkpoint does not belong to this video (another size)")
        digest.update(latents.numpy().tobytes())
        latents = latents.to(device)
    else:
        frames = read_clip(source.video, width=width, height=height, fps=FPS)
        # The last latents whose frames the video holds (a causal clip is 1 + 4k frames).
        count = min(CONTEXT, (len(frames) - 1) // 4 + 1)
        latents = encode_clip(components, frames[len(frames) - frames_of_latents(count) :], device)
    first = encode_latent(components, image_to_tensor(frames[0]), device=device)
    return Continuation(frames=frames, latents=latents, first=first, key=digest.digest())


def encode_clip(components: Components, frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """The VAE latents (1, C, 1 + (T-1)/4, h, w) float32 of (T, H, W, 3) uint8 frames: the
    posterior's mean, as the start picture's (`encode_latent`)."""
    vae = components.vae
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1
    pixels = pixels.permute(3, 0, 1, 2)[None].to(device=device, dtype=vae.dtype)
    latents = vae.encode(pixels).latent_dist.mode()
    return (latents * vae.config.scaling_factor).to(dtype=torch.float32)
