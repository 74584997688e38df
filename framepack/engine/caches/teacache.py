"""TeaCache for FramePack's transformer, as a diffusers hook module.

TeaCache (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video
Diffusion Model"; shipped in FramePack's demo) skips the transformer's block
stack on the steps where its input barely moved, and adds the residual the
stack made last time instead. The indicator is the first double block's
modulated input, ``transformer_blocks[0].norm1(hidden, emb=temb)[0]``: its
relative L1 change to the previous step, mean|delta| / mean|previous|, rescaled
by a polynomial fitted for HunyuanVideo, is accumulated; a step computes when
the sum reaches `rel_l1_thresh`, which then starts again from 0. The first and
the last step of a section always compute.

Unlike the demo, which counts calls and so lets the two passes of real CFG
share one state, each pass keeps its own: the state is keyed by the
`cache_context` name ("cond", "uncond") the engine wraps each pass in, and the
context also says which step of how many this is.

Example::

    apply_teacache(transformer, TeaCacheConfig(rel_l1_thresh=0.15))
    with transformer.cache_context("cond", step_index=i, num_inference_steps=n):
        transformer(...)
    transformer._reset_stateful_cache()  # before the next section
    remove_teacache(transformer)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.hooks.hooks import BaseState, HookRegistry, ModelHook, StateManager

HEAD_HOOK = "fpb_teacache_head"
BLOCK_HOOK = "fpb_teacache_block"

# HunyuanVideo's rescale polynomial (FramePack's demo, TeaCache4HunyuanVideo), highest power first.
HUNYUAN_COEFFICIENTS = (
    7.33226126e02,
    -4.01131952e02,
    6.75869174e01,
    -3.14987800e00,
    9.61237896e-02,
)


@dataclass(frozen=True)
class TeaCacheConfig:
    """rel_l1_thresh: the accumulated rescaled change at which a step computes again (0.15
    skips about half the steps, ~2.1x; 0.1 ~1.6x). coefficients: the rescale polynomial."""

    rel_l1_thresh: float = 0.15
    coefficients: tuple[float, ...] = HUNYUAN_COEFFICIENTS

    def __post_init__(self) -> None:
        if not self.rel_l1_thresh > 0:
            raise ValueError(
                f"TeaCache's rel_l1_thresh must be above 0, not {self.rel_l1_thresh} "
                "(turn the cache off to compute every step)"
            )

    def rescale(self, x: float) -> float:
        value = 0.0
        for c in self.coefficients:
            value = value * x + c
        return value


class TeaCacheState(BaseState):
    """One CFG branch's state within a section."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.previous_modulated: torch.Tensor | None = None
        self.previous_residual: torch.Tensor | None = None
        self.accumulated = 0.0
        self.head_input: torch.Tensor | None = None
        self.should_compute = True
        self.capture_indicator = False  # take the indicator from the head block's own norm1
        self.computed = 0
        self.skipped = 0


def _block_outputs(metadata, hidden: torch.Tensor, args, kwargs):
    """What a block returns, from the hidden states it should have made."""
    if metadata.return_encoder_hidden_states_index is None:
        return hidden
    encoder = metadata._get_parameter_from_args_kwargs("encoder_hidden_states", args, kwargs)
    out = [None] * (
        max(metadata.return_hidden_states_index, metadata.return_encoder_hidden_states_index) + 1
    )
    out[metadata.return_hidden_states_index] = hidden
    out[metadata.return_encoder_hidden_states_index] = encoder
    return tuple(out)


class TeaCacheHeadHook(ModelHook):
    """On the first block: decides whether this step computes; when it does not, returns
    its input plus the cached residual (the other blocks then pass it through)."""

    _is_stateful = True

    def __init__(self, state_manager: StateManager, config: TeaCacheConfig) -> None:
        super().__init__()
        self.state_manager = state_manager
        self.config = config
        self._metadata = None
        self._capture = None

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        self._metadata = TransformerBlockRegistry.get(module.__class__)
        # At a section's first step the indicator is the one the block computes anyway:
        # no extra call of norm1, so that the first pass runs exactly the layers an
        # uncached pass runs (the low memory mode records its prefetch order from it).
        self._capture = module.norm1.register_forward_hook(self._capture_indicator)
        return module

    def deinitalize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None
        return module

    def _capture_indicator(self, _module, _args, output) -> None:
        if self.state_manager._context is None:
            return
        state: TeaCacheState = self.state_manager.get_state()
        if state.capture_indicator:
            state.previous_modulated = output[0]
            state.capture_indicator = False

    @torch.compiler.disable
    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        context = self.state_manager.context
        if context.step_index is None or context.num_inference_steps is None:
            raise ValueError(
                "TeaCache needs cache_context(name, step_index=..., num_inference_steps=...)"
            )
        meta = self._metadata
        hidden = meta._get_parameter_from_args_kwargs(
            meta.hidden_states_argument_name, args, kwargs
        )
        state: TeaCacheState = self.state_manager.get_state()
        step, steps = context.step_index, context.num_inference_steps
        if step == 0 or step >= steps - 1 or state.previous_modulated is None:
            compute = True
            state.accumulated = 0.0
            state.capture_indicator = step < steps - 1  # the next step compares with this one
        else:
            temb = meta._get_parameter_from_args_kwargs("temb", args, kwargs)
            modulated = module.norm1(hidden, emb=temb)[0]
            previous = state.previous_modulated
            change = ((modulated - previous).abs().mean() / previous.abs().mean()).item()
            state.accumulated += self.config.rescale(change)
            compute = (
                state.accumulated >= self.config.rel_l1_thresh or state.previous_residual is None
            )
            if compute:
                state.accumulated = 0.0
            state.previous_modulated = modulated
        state.should_compute = compute
        if not compute:
            state.skipped += 1
            return _block_outputs(meta, hidden + state.previous_residual, args, kwargs)
        state.computed += 1
        state.head_input = hidden
        return self.fn_ref.original_forward(*args, **kwargs)

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state_manager.reset()
        return module


class TeaCacheBlockHook(ModelHook):
    """On every other block: passes its input through on a skipped step; the last block
    records the residual of a computed one."""

    def __init__(self, state_manager: StateManager, *, is_tail: bool) -> None:
        super().__init__()
        self.state_manager = state_manager
        self.is_tail = is_tail
        self._metadata = None

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        self._metadata = TransformerBlockRegistry.get(module.__class__)
        return module

    @torch.compiler.disable
    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state: TeaCacheState = self.state_manager.get_state()
        meta = self._metadata
        if not state.should_compute:
            hidden = meta._get_parameter_from_args_kwargs(
                meta.hidden_states_argument_name, args, kwargs
            )
            return _block_outputs(meta, hidden, args, kwargs)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.is_tail:
            out = output[meta.return_hidden_states_index] if isinstance(output, tuple) else output
            state.previous_residual = out - state.head_input
            state.head_input = None
        return output


def _blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    return [*transformer.transformer_blocks, *transformer.single_transformer_blocks]


def apply_teacache(transformer: torch.nn.Module, config: TeaCacheConfig) -> None:
    """Attach TeaCache to a HunyuanVideo(-Framepack) transformer (its double, then single
    blocks); every pass must then run inside `transformer.cache_context(...)`."""
    HookRegistry.check_if_exists_or_initialize(transformer)
    blocks = _blocks(transformer)
    if len(blocks) < 2:
        raise ValueError("TeaCache needs a transformer of two blocks or more")
    state_manager = StateManager(TeaCacheState)
    HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(
        TeaCacheHeadHook(state_manager, config), HEAD_HOOK
    )
    for i, block in enumerate(blocks[1:], start=1):
        HookRegistry.check_if_exists_or_initialize(block).register_hook(
            TeaCacheBlockHook(state_manager, is_tail=i == len(blocks) - 1), BLOCK_HOOK
        )
    transformer._diffusers_hook.invalidate_child_registries_cache()


def remove_teacache(transformer: torch.nn.Module) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.remove_hook(HEAD_HOOK, recurse=True)
    registry.remove_hook(BLOCK_HOOK, recurse=True)
    registry.invalidate_child_registries_cache()


def teacache_states(transformer: torch.nn.Module) -> dict[str, TeaCacheState]:
    """The per-branch states of the current section (for tests and counts)."""
    hook = HookRegistry.check_if_exists_or_initialize(transformer.transformer_blocks[0]).get_hook(
        HEAD_HOOK
    )
    return {} if hook is None else dict(hook.state_manager._state_cache)
