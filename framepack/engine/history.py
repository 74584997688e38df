"""The latent history of a video and what each FramePack sampler reads from it.

Both samplers keep every latent frame generated so far in one tensor with room
for a 19-frame context (1 frame at full detail, 2 at 2x and 16 at 4x
compression, zeros until real frames fill them):

- inverted anti-drifting (FramePack): the video is built from its end backwards.
  New sections go in front, the context is the frames just *after* the section,
  the start image is always the clean first frame, and a blank gap (padding)
  separates it from the section; the last section rendered is the video's first.
  ``history = [newest section, ..., first rendered section, 19 zeros]``
- forward (FramePack-F1): the video grows at its end; the context is the frames
  just before the section. ``history = [19 zeros, start frame, sections...]``

A history may continue a video (an extension, a video sent as input): the
forward history then begins with the video's last latent frames, ``[19 zeros,
video..., sections...]``, which its context reads as any earlier section's; the
inverted one takes the video's last frame as its start (the clean frame before
the first section, see `framepack.engine.continuation`).

Indices are the frame positions the transformer's RoPE sees (as in the pipeline).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

CONTEXT_SIZES = (1, 2, 16)  # latent frames at 1x, 2x and 4x compression
CONTEXT = sum(CONTEXT_SIZES)


@dataclass(frozen=True)
class SectionSpec:
    index: int  # in rendering order, 0-based
    count: int
    padding: int = 0  # inverted: blank latent windows between the start frame and the section

    @property
    def is_first(self) -> bool:
        return self.index == 0

    @property
    def is_last(self) -> bool:
        return self.index == self.count - 1


@dataclass(frozen=True)
class SectionContext:
    """The transformer's view of the history for one section."""

    indices_latents: torch.Tensor
    latents_clean: torch.Tensor
    indices_clean: torch.Tensor
    latents_2x: torch.Tensor
    indices_2x: torch.Tensor
    latents_4x: torch.Tensor
    indices_4x: torch.Tensor


class LatentHistory(ABC):
    """Latent frames so far; `generated` counts the real ones (the rest are zeros), of
    which `carried` were there before the first section."""

    prepends: bool  # whether new pixels go before the old ones

    def __init__(
        self,
        latents: torch.Tensor,
        generated: int,
        start: torch.Tensor,
        window: int,
        carried: int = 0,
    ) -> None:
        self.latents = latents
        self.generated = generated
        self.start = start  # the start image's latent, (B, 16, 1, h, w)
        self.window = window
        self.carried = carried

    @classmethod
    @abstractmethod
    def new(cls, start: torch.Tensor, window: int) -> LatentHistory: ...

    @staticmethod
    @abstractmethod
    def plan(count: int) -> list[SectionSpec]: ...

    @abstractmethod
    def context(self, spec: SectionSpec, end: torch.Tensor | None = None) -> SectionContext: ...

    @abstractmethod
    def add(self, section: torch.Tensor, spec: SectionSpec) -> None:
        """Take in the denoised latents of `spec`."""

    @abstractmethod
    def real(self) -> torch.Tensor:
        """The generated frames only, in video order."""

    @abstractmethod
    def rewind(self, generated: int) -> LatentHistory:
        """The history as it was when it held `generated` real frames."""

    @abstractmethod
    def generated_after(self, spec: SectionSpec) -> int:
        """How many real frames there are once `spec` is added."""

    def decode_window(self, spec: SectionSpec) -> torch.Tensor:
        """The latents to decode after `spec`: all of them after the first section, then
        the new section with one window of the previous one, which the pixels blend over."""
        real = self.real()
        if spec.is_first:
            return real
        frames = self.window * 2 + (1 if spec.is_last and self.prepends else 0)
        return real[:, :, :frames] if self.prepends else real[:, :, -frames:]


class InvertedHistory(LatentHistory):
    prepends = True

    @classmethod
    def new(cls, start: torch.Tensor, window: int) -> InvertedHistory:
        b, c, _, h, w = start.shape
        zeros = torch.zeros(b, c, CONTEXT, h, w, dtype=torch.float32, device=start.device)
        return cls(zeros, 0, start, window)

    @staticmethod
    def plan(count: int) -> list[SectionSpec]:
        paddings = list(reversed(range(count)))
        if count > 4:
            # The original's trick: repeating padding 2 looks better than longer gaps.
            paddings = [3] + [2] * (count - 3) + [1, 0]
        return [SectionSpec(i, count, padding) for i, padding in enumerate(paddings)]

    def context(self, spec: SectionSpec, end: torch.Tensor | None = None) -> SectionContext:
        pad = spec.padding * self.window
        indices = torch.arange(0, 1 + pad + self.window + CONTEXT)
        prefix, _blank, latents, h1, h2, h4 = indices.split([1, pad, self.window, *CONTEXT_SIZES])
        history_1x, history_2x, history_4x = self.latents[:, :, :CONTEXT].split(
            CONTEXT_SIZES, dim=2
        )
        if end is not None and spec.is_first:
            history_1x = end  # the end image is the frame right after the video's last section
        return SectionContext(
            indices_latents=latents,
            latents_clean=torch.cat([self.start, history_1x], dim=2),
            indices_clean=torch.cat([prefix, h1]),
            latents_2x=history_2x,
            indices_2x=h2,
            latents_4x=history_4x,
            indices_4x=h4,
        )

    def add(self, section: torch.Tensor, spec: SectionSpec) -> None:
        if spec.is_last:
            section = torch.cat([self.start, section], dim=2)
        self.generated += section.shape[2]
        self.latents = torch.cat([section, self.latents], dim=2)

    def real(self) -> torch.Tensor:
        return self.latents[:, :, : self.generated]

    def rewind(self, generated: int) -> InvertedHistory:
        drop = self.generated - generated
        return InvertedHistory(
            self.latents[:, :, drop:], generated, self.start, self.window, self.carried
        )

    def generated_after(self, spec: SectionSpec) -> int:
        return (spec.index + 1) * self.window + (1 if spec.is_last else 0)


class ForwardHistory(LatentHistory):
    prepends = False

    @classmethod
    def new(cls, start: torch.Tensor, window: int) -> ForwardHistory:
        b, c, _, h, w = start.shape
        zeros = torch.zeros(b, c, CONTEXT, h, w, dtype=torch.float32, device=start.device)
        return cls(torch.cat([zeros, start.to(zeros)], dim=2), 1, start, window, carried=1)

    @classmethod
    def continuing(cls, video: torch.Tensor, start: torch.Tensor, window: int) -> ForwardHistory:
        """A history whose real frames so far are `video`'s latents (its last ones, in
        video order); `start` is its first frame's, which every section sees as F1's."""
        b, c, _, h, w = video.shape
        zeros = torch.zeros(b, c, CONTEXT, h, w, dtype=torch.float32, device=video.device)
        latents = torch.cat([zeros, video.to(zeros)], dim=2)
        return cls(latents, video.shape[2], start, window, carried=video.shape[2])

    @staticmethod
    def plan(count: int) -> list[SectionSpec]:
        return [SectionSpec(i, count) for i in range(count)]

    def context(self, spec: SectionSpec, end: torch.Tensor | None = None) -> SectionContext:
        indices = torch.arange(0, 1 + CONTEXT + self.window)
        prefix, h4, h2, h1, latents = indices.split([1, *reversed(CONTEXT_SIZES), self.window])
        history_4x, history_2x, history_1x = self.latents[:, :, -CONTEXT:].split(
            tuple(reversed(CONTEXT_SIZES)), dim=2
        )
        return SectionContext(
            indices_latents=latents,
            latents_clean=torch.cat([self.start, history_1x], dim=2),
            indices_clean=torch.cat([prefix, h1]),
            latents_2x=history_2x,
            indices_2x=h2,
            latents_4x=history_4x,
            indices_4x=h4,
        )

    def add(self, section: torch.Tensor, spec: SectionSpec) -> None:
        self.generated += section.shape[2]
        self.latents = torch.cat([self.latents, section], dim=2)

    def real(self) -> torch.Tensor:
        return self.latents[:, :, -self.generated :]

    def rewind(self, generated: int) -> ForwardHistory:
        keep = self.latents.shape[2] - (self.generated - generated)
        return ForwardHistory(
            self.latents[:, :, :keep], generated, self.start, self.window, self.carried
        )

    def generated_after(self, spec: SectionSpec) -> int:
        return self.carried + (spec.index + 1) * self.window


HISTORIES: dict[str, type[LatentHistory]] = {"inverted": InvertedHistory, "forward": ForwardHistory}
