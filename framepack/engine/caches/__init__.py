"""Step caches: skip the transformer's block stack on steps where its input barely
changed, and reuse the residual it made last time. One is chosen per job
(``off``, ``teacache``, ``magcache``), attached for the job's sections, reset
at each section's start and taken off at the end; ``off`` attaches nothing.

Every transformer pass runs inside ``transformer.cache_context(branch,
step_index=..., num_inference_steps=...)`` (`framepack.engine.denoiser`), so each
CFG branch keeps its own state.

- TeaCache: our hook module, `framepack.engine.caches.teacache`.
- MagCache: diffusers' (`diffusers.hooks.mag_cache`), with FramePack-Studio's
  ratio tables (`framepack.engine.caches.mag_ratios`).

`BlockPasses` counts the passes the block stack really computes (a hook on its
last block, inside the caches' hooks): the measure of what a cache saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

from framepack.engine.caches.mag_ratios import MagTables, mag_ratios

CACHES: tuple[str, ...] = ("off", "teacache", "magcache")
# teacache: rel_l1_thresh (the demo's 0.15, ~2.1x); magcache: FramePack-Studio's default
DEFAULT_THRESHOLDS: dict[str, float] = {"teacache": 0.15, "magcache": 0.1}
# FramePack-Studio's MagCache settings: at most 2 skips in a row, the first 20 % computed
MAG_MAX_SKIP_STEPS = 2
MAG_RETENTION_RATIO = 0.2

_COUNTER_HOOK = "fpb_block_passes"


def cache_threshold(cache: str, threshold: float | None) -> float | None:
    """The threshold a job runs with: its own, else the cache's default (None when off)."""
    if cache == "off":
        return None
    return DEFAULT_THRESHOLDS[cache] if threshold is None else threshold


def apply_step_cache(
    transformer: torch.nn.Module,
    cache: str,
    *,
    threshold: float | None,
    family: str,
    height: int,
    width: int,
    steps: int,
    calibrated: MagTables | None = None,
) -> None:
    """Attach `cache` to `transformer` for a job of `steps` steps at height x width, the
    model `family` (its MagCache ratios, the host's `calibrated` ones first); ``off``
    attaches nothing."""
    remove_step_cache(transformer)
    if cache == "off":
        return
    value = cache_threshold(cache, threshold)
    if cache == "teacache":
        from framepack.engine.caches.teacache import TeaCacheConfig, apply_teacache

        apply_teacache(transformer, TeaCacheConfig(rel_l1_thresh=value))
    elif cache == "magcache":
        from diffusers.hooks.mag_cache import MagCacheConfig, apply_mag_cache, nearest_interp

        table = torch.tensor(
            mag_ratios(family, height=height, width=width, steps=steps, calibrated=calibrated)
        )
        ratios = nearest_interp(table, steps).tolist()
        # A ratio of 0 at the last step: its error is 1 or more, above any threshold
        # (< 1), so the last step computes, as TeaCache's does (the first ones are
        # MagCache's retention steps).
        ratios[-1] = 0.0
        apply_mag_cache(
            transformer,
            MagCacheConfig(
                threshold=value,
                max_skip_steps=MAG_MAX_SKIP_STEPS,
                retention_ratio=MAG_RETENTION_RATIO,
                num_inference_steps=steps,
                mag_ratios=list(ratios),
            ),
        )
        HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
    else:
        raise ValueError(f"cache must be one of {', '.join(CACHES)}, not {cache!r}")


def remove_step_cache(transformer: torch.nn.Module) -> None:
    """Take off whichever step cache is attached (none: nothing happens)."""
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

    from framepack.engine.caches.teacache import remove_teacache

    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    remove_teacache(transformer)
    registry.remove_hook(_MAG_CACHE_LEADER_BLOCK_HOOK, recurse=True)
    registry.remove_hook(_MAG_CACHE_BLOCK_HOOK, recurse=True)
    registry.invalidate_child_registries_cache()


def reset_step_cache(transformer: torch.nn.Module) -> None:
    """Start a section afresh: every branch's state (residuals, sums, step counts) dropped."""
    HookRegistry.check_if_exists_or_initialize(transformer).reset_stateful_hooks(recurse=True)


class _CountPasses(ModelHook):
    def __init__(self, counter: BlockPasses) -> None:
        super().__init__()
        self.counter = counter

    def pre_forward(self, module, *args, **kwargs):
        self.counter.count += 1
        return args, kwargs


@dataclass
class BlockPasses:
    """How many times the block stack's last block computed (skipped steps do not count)."""

    count: int = 0

    @classmethod
    def attach(cls, transformer: torch.nn.Module) -> BlockPasses:
        """Count on `transformer`'s last block; attach it before any step cache (the caches'
        hooks then wrap it, so it sees only the passes they let through)."""
        last = [*transformer.transformer_blocks, *transformer.single_transformer_blocks][-1]
        registry = HookRegistry.check_if_exists_or_initialize(last)
        existing = registry.get_hook(_COUNTER_HOOK)
        if existing is not None:
            return existing.counter
        counter = cls()
        registry.register_hook(_CountPasses(counter), _COUNTER_HOOK)
        return counter
