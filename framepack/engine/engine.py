"""FramePack, section by section, as a stream of events.

The bot needs to show progress between steps, a playable video after every
section, to stop within a step when asked, and to pick a job up again after a
crash, so the engine runs FramePack's section loop itself, over the components
of diffusers' `HunyuanVideoFramepackPipeline`. It computes what FramePack's demo
computes (its sampler, numerics and random stream): with the same weights,
picture, prompt and seed its frames equal the demo's loop
(tests/test_engine_demo_parity.py); with the Euler solver and cfg 1 they also
equal the diffusers pipeline's (tests/test_engine_parity.py).

A job's life in `generate`: check the settings; crop the picture to its bucket;
encode the prompts and the picture; resume from the checkpoint in `workdir` if
it belongs to this job (re-decoding the finished sections, which is exact and
cheap next to sampling them); attach the job's step cache, if any
(`framepack.engine.caches`); then per section: reset the cache, denoise (a `Step` per step),
add the latents to the history, decode the new frames and blend them in, save
the checkpoint, and write the video so far while the next section samples
(`Section`, once written); finally `Done`.

A job may thus run twice (resumed from its checkpoint); it ends with the same
frames either way.

A job may continue a video (`VideoSource`: one of ours to extend, or one a member
sent): its sections then carry on from the video's last latents, and the video
delivered is the whole clip (see `framepack.engine.continuation`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from framepack.engine.buckets import find_nearest_bucket, resize_and_center_crop
from framepack.engine.caches import (
    BlockPasses,
    apply_step_cache,
    cache_threshold,
    remove_step_cache,
    reset_step_cache,
)
from framepack.engine.caches.mag_ratios import MagTables
from framepack.engine.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from framepack.engine.conditioning import (
    PromptEmbeds,
    encode_image_features,
    encode_latent,
    encode_prompt,
    image_to_tensor,
    section_noise,
)
from framepack.engine.continuation import (
    Continuation,
    VideoSource,
    frames_of_latents,
    load_continuation,
)
from framepack.engine.denoiser import Denoiser, Guidance, distilled_guidance
from framepack.engine.events import Cancelled, Done, EngineEvent, Section, Started, Step
from framepack.engine.frames import FrameHistory
from framepack.engine.history import (
    HISTORIES,
    ForwardHistory,
    InvertedHistory,
    LatentHistory,
    SectionContext,
    SectionSpec,
)
from framepack.engine.params import GenerationParams, check_params
from framepack.engine.previews import latents_to_rgb
from framepack.engine.prompts import section_prompts
from framepack.engine.sampling import StepCancelled, denoise_section
from framepack.engine.schedule import section_tokens
from framepack.engine.solvers import make_solver
from framepack.models.components import Components
from framepack.models.fp32_output import apply_fp32_output
from framepack.models.lora import LoadedLora, LoraConfig, LoraError, apply_loras, attach_loras
from framepack.models.memory import (
    WeightBytes,
    apply_memory_mode,
    choose_memory_mode,
    free_vram,
    resolve_device,
)
from framepack.video.sections import SectionVideos

log = logging.getLogger(__name__)

VIDEO_NAME = "video.mp4"
SOFTWARE = "framepack-bot"


def partial_video_name(section: int) -> str:
    return f"partial_{section:03d}.mp4"


@dataclass(frozen=True)
class PreparedJob:
    """Everything a job's sections need, computed once before the first."""

    params: GenerationParams
    specs: list[SectionSpec]
    height: int
    width: int
    start_pixels: torch.Tensor  # (1, 3, H, W) in [-1, 1]
    end_pixels: torch.Tensor | None
    fingerprint: str
    prompts: list[PromptEmbeds]  # per section, in rendering order
    image_embeds: torch.Tensor
    guidance: Guidance
    metadata: dict[str, str]
    continuation: Continuation | None = None  # the video this job continues, if any


class FramePackEngine:
    """Renders jobs on one set of components, loaded and placed once for many jobs."""

    def __init__(
        self,
        components: Components,
        *,
        device: torch.device | str = "cpu",
        memory: str = "auto",
        loras: Mapping[str, Path | LoraError] | None = None,
        mag_tables: MagTables | None = None,
    ) -> None:
        """`loras`: the LoRA files (name -> file, or why it could not be fetched) that jobs
        may switch on; each is attached once, here. `mag_tables`: MagCache ratios the host
        calibrated (`framepack-bot calibrate-cache`), used before the shipped ones."""
        self.components = components
        self.mag_tables: MagTables = mag_tables or {}
        self.device = resolve_device(device)
        self.memory_mode = choose_memory_mode(
            memory,
            device=self.device,
            free_bytes=free_vram(self.device),
            weights=WeightBytes.of_components(components),
        )
        # Before the memory mode: group offloading keeps copies of the weights it places.
        apply_fp32_output(components.transformer)
        # Before the memory mode too: its hooks then place the adapters' weights as well.
        self.loras: dict[str, LoadedLora] = attach_loras(components.transformer, loras or {})
        apply_memory_mode(components, self.memory_mode, self.device)
        # Inside every step cache's hooks (they come per job, after it): the passes computed.
        self.block_passes = BlockPasses.attach(components.transformer)
        log.info(
            "engine: %s model on %s, memory mode %s",
            components.preset,
            self.device,
            self.memory_mode,
        )

    def generate(
        self,
        params: GenerationParams,
        image: Image.Image | None,
        *,
        workdir: Path,
        end_image: Image.Image | None = None,
        source: VideoSource | None = None,
        should_cancel: Callable[[], bool] = lambda: False,
        on_frames: Callable[[np.ndarray], None] | None = None,
    ) -> Iterator[EngineEvent]:
        """Render `params` from `image`, or on from the video `source` (then `image` is not
        used: the video's own frames are); the events of `framepack.engine.events`, in order.

        Bad settings raise ValueError here, before anything runs. `workdir` holds the
        checkpoint and the videos. `on_frames`, if given, receives the finished
        frames (T, H, W, 3) uint8 before `Done`, uncompressed (for tests and tools).
        Raises `Cancelled` when `should_cancel()` is true before a step.
        """
        check_params(params, preset=self.components.preset, has_end_image=end_image is not None)
        if image is None and source is None:
            raise ValueError("a job needs a picture or a video to start from")
        self.use_loras(params)  # raises LoraUnavailable before anything runs
        return self._run(params, image, end_image, source, Path(workdir), should_cancel, on_frames)

    @torch.no_grad()
    def _run(
        self,
        params: GenerationParams,
        image: Image.Image | None,
        end_image: Image.Image | None,
        source: VideoSource | None,
        workdir: Path,
        should_cancel: Callable[[], bool],
        on_frames: Callable[[np.ndarray], None] | None,
    ) -> Iterator[EngineEvent]:
        workdir.mkdir(parents=True, exist_ok=True)
        self.use_loras(params)  # this job's adapters, whatever ran since `generate`
        job = self.prepare(params, image, end_image, source=source)
        # The seed's generator draws the section noises and nothing else (as the demo).
        generator = torch.Generator("cpu").manual_seed(params.seed)
        history, end_latent, done = self._start_or_resume(job, workdir, generator)
        frames = FrameHistory(overlap=(params.latent_window - 1) * 4 + 1, prepends=history.prepends)
        yield Started(sections=len(job.specs), steps=params.steps, first_section=done)

        for spec in job.specs[:done]:  # resumed: the finished sections' frames, decoded again
            frames.add(self._pixels(history.rewind(history.generated_after(spec)), spec, job))

        video = workdir / VIDEO_NAME
        videos = SectionVideos(fps=params.fps, crf=params.crf, metadata=job.metadata)
        apply_step_cache(  # for this job's sections; reset as each one starts
            self.components.transformer,
            params.cache,
            threshold=params.cache_threshold,
            family=self.components.preset,
            height=job.height,
            width=job.width,
            steps=params.steps,
            calibrated=self.mag_tables,
        )
        try:
            for spec in job.specs[done:]:
                passes = self.block_passes.count
                latents = yield from self._sample(
                    job, spec, history.context(spec, end_latent), generator, videos, should_cancel
                )
                log.info(
                    "section %d: the block stack computed %d passes (cache %s)",
                    spec.index,
                    self.block_passes.count - passes,
                    params.cache,
                )
                history.add(latents, spec)
                frames.add(self._pixels(history, spec, job))
                save_checkpoint(
                    workdir / CHECKPOINT_NAME,
                    Checkpoint(
                        job.fingerprint, spec.index + 1, history.generated, history.latents,
                        history.start, end_latent, generator.get_state(),
                        prepends=history.prepends, carried=history.carried,
                    ),
                )  # fmt: skip
                yield from videos.wait()  # at most one video in the works
                so_far = self._video_so_far(job, frames, final=spec.is_last)
                section = Section(spec.index, len(job.specs), len(so_far), video)
                if spec.is_last:
                    videos.write_final(so_far, video)
                    yield section
                else:
                    partial = replace(section, video=workdir / partial_video_name(spec.index))
                    videos.start_partial(so_far, partial)
        finally:
            remove_step_cache(self.components.transformer)
            videos.close()

        result = self._video_so_far(job, frames, final=True)
        if done == len(job.specs):  # resumed after the last section: the video may be missing
            videos.write_final(result, video)
        if on_frames is not None:
            on_frames(result)
        yield Done(
            video=video,
            frames=len(result),
            seconds=len(result) / params.fps,
            width=job.width,
            height=job.height,
            metadata=job.metadata,
        )

    def _sample(
        self,
        job: PreparedJob,
        spec: SectionSpec,
        context: SectionContext,
        generator: torch.Generator,
        videos: SectionVideos,
        should_cancel: Callable[[], bool],
    ) -> Generator[EngineEvent, None, torch.Tensor]:
        """Denoise one section: its `Step`s (and the previous section's video when it is
        written); returns its latents."""
        steps = self.section_steps(job, spec, context, generator, should_cancel=should_cancel)
        try:
            while True:
                step, denoised = next(steps)
                yield from videos.ready()
                preview = latents_to_rgb(denoised)
                yield Step(section=spec.index, step=step, steps=job.params.steps, preview=preview)
        except StopIteration as finished:
            return finished.value
        except StepCancelled:
            yield from videos.wait()  # the last finished section's video still goes out
            raise Cancelled(spec.index) from None

    def section_steps(
        self,
        job: PreparedJob,
        spec: SectionSpec,
        context: SectionContext,
        generator: torch.Generator,
        *,
        should_cancel: Callable[[], bool] = lambda: False,
    ) -> Generator[tuple[int, torch.Tensor], None, torch.Tensor]:
        """One section's denoising: draws its noise from `generator`, yields (step, clean
        estimate) after each step and returns the section's latents.

        The model work of a section, without events, previews or files: what
        `generate` runs per section, and what a shape-only run on the meta device runs.
        """
        noise = self._noise(job, generator)
        reset_step_cache(self.components.transformer)  # each section starts its cache afresh
        denoiser = Denoiser(
            self.components.transformer,
            context,
            prompt=job.prompts[spec.index],
            image_embeds=job.image_embeds,
            guidance=job.guidance,
        )
        tokens = section_tokens(
            *noise.shape[2:], patch_size=self.components.transformer.config.patch_size
        )
        solver = make_solver(
            job.params.scheduler, steps=job.params.steps, tokens=tokens, device=noise.device
        )
        return denoise_section(denoiser, solver, noise, should_cancel=should_cancel)

    def use_loras(self, params: GenerationParams) -> None:
        """Switch the transformer's adapters to those of `params` (none: the base model).
        Raises `LoraUnavailable` for one that is not attached."""
        apply_loras(self.components.transformer, LoraConfig(params.loras), self.loras)

    @torch.no_grad()
    def prepare(
        self,
        params: GenerationParams,
        image: Image.Image | None,
        end_image: Image.Image | None = None,
        *,
        source: VideoSource | None = None,
    ) -> PreparedJob:
        """Crop the pictures to their bucket and encode the prompts and the start picture
        (or read the video `source` continues)."""
        check_params(params, preset=self.components.preset, has_end_image=end_image is not None)
        c, device = self.components, self.device
        dtype = c.transformer.dtype
        continuation = None
        if source is not None:
            height, width = source.size(params.resolution)
            continuation = load_continuation(c, source, height=height, width=width, device=device)
            # The picture of the start latent: the clip's last frame (inverted), or first.
            start_rgb = continuation.frames[-1 if params.sampler == "inverted" else 0]
        elif image is not None:
            # A phone photo's EXIF orientation says which way is up; the pixels alone do not.
            start_rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
            height, width = find_nearest_bucket(*start_rgb.shape[:2], resolution=params.resolution)
            start_rgb = resize_and_center_crop(start_rgb, target_width=width, target_height=height)
        else:
            raise ValueError("a job needs a picture or a video to start from")
        end_rgb = None
        if end_image is not None:
            end_rgb = resize_and_center_crop(
                np.asarray(ImageOps.exif_transpose(end_image).convert("RGB")),
                target_width=width,
                target_height=height,
            )

        specs = HISTORIES[params.sampler].plan(params.sections())
        texts = section_prompts(
            params.prompt,
            sections=len(specs),
            section_seconds=params.section_seconds(),
            inverted=params.sampler == "inverted",
        )
        encoded = {
            text: encode_prompt(c, text, device=device, dtype=dtype)
            for text in dict.fromkeys(texts)
        }
        negative = None
        if params.cfg > 1:  # real CFG, on the negative prompt even when it is "" (as the demo)
            negative = encode_prompt(c, params.negative_prompt, device=device, dtype=dtype)
        # Every section is conditioned on the start picture's features only (the end
        # image, if any, is a latent of the first section's context).
        image_embeds = encode_image_features(c, start_rgb, device=device, dtype=dtype)

        fingerprint = hashlib.sha256()
        weights = c.transformer.config.get("_name_or_path", "")  # which checkpoint, if loaded
        for part in (params.fingerprint(), c.preset, str(c.is_random), weights):
            fingerprint.update(part.encode())
        for rgb in (start_rgb, end_rgb):
            fingerprint.update(b"-" if rgb is None else rgb.tobytes())
        fingerprint.update(b"-" if continuation is None else continuation.key)
        for name, _ in params.loras:  # a LoRA file replaced under its name is another job
            fingerprint.update(self.loras[name].digest.encode() if name in self.loras else b"?")

        return PreparedJob(
            params=params,
            specs=specs,
            height=height,
            width=width,
            start_pixels=image_to_tensor(start_rgb),
            end_pixels=None if end_rgb is None else image_to_tensor(end_rgb),
            fingerprint=fingerprint.hexdigest(),
            prompts=[encoded[text] for text in texts],
            image_embeds=image_embeds,
            guidance=Guidance(
                distilled=distilled_guidance(params.guidance, dtype=dtype, device=device),
                cfg=params.cfg,
                negative=negative,
            ),
            metadata=self._metadata(params, width, height, continuation),
            continuation=continuation,
        )

    @torch.no_grad()
    def start(self, job: PreparedJob) -> tuple[LatentHistory, torch.Tensor | None]:
        """A new history from the start picture's latent (or the video it continues), and
        the end picture's latent."""
        end = None
        if job.end_pixels is not None:
            end = encode_latent(self.components, job.end_pixels, device=self.device)
        window, video = job.params.latent_window, job.continuation
        if video is not None and job.params.sampler == "forward":
            return ForwardHistory.continuing(video.latents, video.first, window), end
        if video is not None:
            return InvertedHistory.new(video.latents[:, :, -1:], window), end
        start = encode_latent(self.components, job.start_pixels, device=self.device)
        return HISTORIES[job.params.sampler].new(start, window), end

    def _start_or_resume(
        self, job: PreparedJob, workdir: Path, generator: torch.Generator
    ) -> tuple[LatentHistory, torch.Tensor | None, int]:
        """The history, the end latent and the number of sections already done."""
        kind = HISTORIES[job.params.sampler]
        saved = load_checkpoint(workdir / CHECKPOINT_NAME, job.fingerprint)
        if saved is not None:
            generator.set_state(saved.rng_state)
            start = saved.start.to(self.device)
            history = kind(
                saved.history.to(self.device),
                saved.generated,
                start,
                job.params.latent_window,
                saved.carried,
            )
            end = None if saved.end is None else saved.end.to(self.device)
            log.info("resuming after section %d of %d", saved.sections_done, len(job.specs))
            return history, end, saved.sections_done
        return *self.start(job), 0

    def _noise(self, job: PreparedJob, generator: torch.Generator) -> torch.Tensor:
        """A section's starting noise, from the job's generator (so a seed is a video)."""
        channels = self.components.transformer.config.in_channels
        shape = (1, channels, job.params.latent_window, job.height // 8, job.width // 8)
        return section_noise(shape, generator=generator, device=self.device)

    def _pixels(self, history: LatentHistory, spec: SectionSpec, job: PreparedJob) -> torch.Tensor:
        """The decoded frames `spec` adds to the video (blended in by `FrameHistory`).

        Continuing a video, the section next to it is decoded with the video's last
        latents before it (the causal VAE's context, so the seam is as smooth as
        between two sections) and the frames of those latents are dropped: the
        video's own frames stay as they were.
        """
        video, window = job.continuation, history.window
        if video is not None and not history.prepends and spec.is_first:
            latents = history.real()[:, :, -2 * window :]
            context = latents.shape[2] - window
        elif video is not None and history.prepends and spec.is_last:
            context_latents = video.latents[:, :, -window:]
            # the section's first latent is the start, the video's last: it is in the context
            latents = torch.cat([context_latents, history.decode_window(spec)[:, :, 1:]], dim=2)
            context = context_latents.shape[2]
        else:
            return self.decode(history.decode_window(spec))
        return self.decode(latents)[:, :, frames_of_latents(context) :]

    @staticmethod
    def _video_so_far(job: PreparedJob, frames: FrameHistory, *, final: bool) -> np.ndarray:
        """The frames of the video file after a section: a continued video's frames come
        first in the final video and, rendering forward, in each partial one too (the
        inverted sampler's partial videos show the new part, which grows from its end)."""
        video = job.continuation
        if video is None or (not final and frames.prepends):
            return frames.frames()
        return np.concatenate([video.frames, frames.frames()], axis=0)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, frames, H, W) in [-1, 1] of `latents`, in the VAE's dtype."""
        vae = self.components.vae
        # Unscaled in float32, then cast, as the demo's `vae_decode` (the pipeline casts first).
        return vae.decode((latents / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0]

    def _metadata(
        self,
        params: GenerationParams,
        width: int,
        height: int,
        continuation: Continuation | None = None,
    ) -> dict[str, str]:
        seconds = params.duration()
        if continuation is not None:  # the whole clip: the video's frames, then the new ones
            seconds = (len(continuation.frames) + params.frames() - 1) / params.fps
        metadata = {
            "prompt": params.prompt,
            "seed": str(params.seed),
            "seconds": f"{seconds:.2f}",
            "steps": str(params.steps),
            "guidance": f"{params.guidance:g}",
            "sampler": params.sampler,
            "scheduler": params.scheduler,
            "size": f"{width}x{height}",
            "model": self.components.preset,
            "software": SOFTWARE,
        }
        if params.cfg > 1:
            metadata |= {"cfg": f"{params.cfg:g}", "negative_prompt": params.negative_prompt}
        if params.loras:
            metadata["loras"] = ", ".join(f"{name} {scale:g}" for name, scale in params.loras)
        if params.cache != "off":
            metadata["cache"] = (
                f"{params.cache} {cache_threshold(params.cache, params.cache_threshold):g}"
            )
        if continuation is not None:
            metadata["continues"] = f"{len(continuation.frames) / params.fps:.2f} s of video"
        return metadata
