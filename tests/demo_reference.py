"""FramePack's demo loop, written again for the tests, in the demo's own structure.

An independent computation of what lllyasviel/FramePack's ``demo_gradio.py``
(inverted anti-drifting) and ``demo_gradio_f1.py`` (forward) compute for one
picture, prompt and seed, from the demo's code paths as documented in the
project's notes: ``encode_prompt_conds``, ``crop_or_pad_yield_mask``,
``vae_encode``, ``hf_clip_vision_encode``, ``sample_hunyuan`` with
``get_flux_sigmas_from_mu``, ``fm_wrapper`` and ``uni_pc_fm.sample_unipc``, the
two section loops, ``vae_decode``, ``soft_append_bcthw`` and the uint8
conversion of ``save_bcthw_as_mp4``. It shares no code with the engine: only the
diffusers/transformers components, called with the demo's arguments.

Two departures, both deliberate and shared with the engine:
- the start latent is the VAE posterior's mean (the demo samples it from the
  unseeded global CUDA generator, which no test can reproduce);
- the demo's packed transformer is diffusers' `HunyuanVideoFramepackTransformer3DModel`,
  called with its argument names (`_packed_call`), with ``proj_out`` in float32 as
  the demo's ``high_quality_fp32_output_for_inference`` (set up here with a hook of
  the test's own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from framepack.models.components import Components

# --- diffusers_helper/pipelines/k_diffusion_hunyuan.py ------------------------------------


def flux_time_shift(t: torch.Tensor, mu: float = 1.15, sigma: float = 1.0) -> torch.Tensor:
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)


def calculate_flux_mu(
    context_length: int, x1: float = 256, y1: float = 0.5, x2: float = 4096, y2: float = 1.15,
    exp_max: float = 7.0,
) -> float:  # fmt: skip
    k = (y2 - y1) / (x2 - x1)
    b = y1 - k * x1
    mu = k * context_length + b
    return min(mu, math.log(exp_max))


def get_flux_sigmas_from_mu(n: int, mu: float) -> torch.Tensor:
    sigmas = torch.linspace(1, 0, steps=n + 1)
    return flux_time_shift(sigmas, mu=mu)


# --- diffusers_helper/k_diffusion/uni_pc_fm.py ---------------------------------------------


def _expand(v: torch.Tensor, dims: int) -> torch.Tensor:
    return v[(...,) + (None,) * (dims - 1)]


def unipc_update(model, x, model_prev_list, t_prev_list, t, order, variant):
    dims = x.dim()
    t_prev_0 = t_prev_list[-1]
    lambda_prev_0 = -torch.log(t_prev_0)
    lambda_t = -torch.log(t)
    model_prev_0 = model_prev_list[-1]
    h = lambda_t - lambda_prev_0

    rks, D1s = [], []
    for i in range(1, order):
        t_prev_i = t_prev_list[-(i + 1)]
        model_prev_i = model_prev_list[-(i + 1)]
        lambda_prev_i = -torch.log(t_prev_i)
        rk = ((lambda_prev_i - lambda_prev_0) / h)[0]
        rks.append(rk)
        D1s.append((model_prev_i - model_prev_0) / rk)
    rks.append(1.0)
    rks = torch.tensor(rks, device=x.device)

    R, b = [], []
    hh = -h[0]
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial_i = 1
    B_h = hh if variant == "bh1" else torch.expm1(hh)
    for i in range(1, order + 1):
        R.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial_i / B_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    R = torch.stack(R)
    b = torch.tensor(b, device=x.device)

    if D1s:
        D1s = torch.stack(D1s, dim=1)
        rhos_p = (
            torch.tensor([0.5], device=x.device)
            if order == 2
            else torch.linalg.solve(R[:-1, :-1], b[:-1])
        )
    else:
        D1s = None
    rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(R, b)

    x_t_ = _expand(t / t_prev_0, dims) * x - _expand(h_phi_1, dims) * model_prev_0
    pred_res = torch.tensordot(D1s, rhos_p, dims=([1], [0])) if D1s is not None else 0
    x_t = x_t_ - _expand(B_h, dims) * pred_res
    model_t = model(x_t, t)
    corr_res = torch.tensordot(D1s, rhos_c[:-1], dims=([1], [0])) if D1s is not None else 0
    D1_t = model_t - model_prev_0
    x_t = x_t_ - _expand(B_h, dims) * (corr_res + rhos_c[-1] * D1_t)
    return x_t, model_t


def sample_unipc(model, x, sigmas, variant="bh1"):
    """`model(x, t)` returns the clean estimate; the result is the last one."""
    order = min(3, len(sigmas) - 2)
    model_prev_list, t_prev_list = [], []
    for i in range(len(sigmas) - 1):
        vec_t = sigmas[i].expand(x.shape[0])
        if i == 0:
            model_prev_list = [model(x, vec_t)]
            t_prev_list = [vec_t]
        else:
            x, model_x = unipc_update(
                model, x, model_prev_list, t_prev_list, vec_t, i if i < order else order, variant
            )
            model_prev_list.append(model_x)
            t_prev_list.append(vec_t)
        model_prev_list = model_prev_list[-order:]
        t_prev_list = t_prev_list[-order:]
    return model_prev_list[-1]


# --- diffusers_helper/k_diffusion/wrapper.py -----------------------------------------------


def fm_wrapper(transformer, t_scale=1000.0):
    def k_model(x, sigma, **extra_args):
        dtype = extra_args["dtype"]
        cfg_scale = extra_args["cfg_scale"]
        original_dtype = x.dtype
        sigma = sigma.float()
        x = x.to(dtype)
        timestep = (sigma * t_scale).to(dtype)
        pred_positive = _packed_call(
            transformer, hidden_states=x, timestep=timestep, **extra_args["positive"]
        ).float()
        if cfg_scale == 1.0:
            pred_negative = torch.zeros_like(pred_positive)
        else:
            pred_negative = _packed_call(
                transformer, hidden_states=x, timestep=timestep, **extra_args["negative"]
            ).float()
        pred_cfg = pred_negative + cfg_scale * (pred_positive - pred_negative)
        # rescale_noise_cfg returns pred_cfg itself at the demo's guidance_rescale 0
        x0 = x.float() - pred_cfg.float() * sigma[(...,) + (None,) * (x.ndim - 1)]
        return x0.to(dtype=original_dtype)

    return k_model


def _packed_call(
    transformer, *, hidden_states, timestep, encoder_hidden_states, encoder_attention_mask,
    pooled_projections, guidance, latent_indices, clean_latents, clean_latent_indices,
    clean_latents_2x, clean_latent_2x_indices, clean_latents_4x, clean_latent_4x_indices,
    image_embeddings,
):  # fmt: skip
    """The packed model's call on diffusers' class: its argument names, 1-D indices, and
    the history cast to the hidden dtype as the packed model casts it."""
    dtype = hidden_states.dtype
    return transformer(
        hidden_states=hidden_states,
        timestep=timestep,
        encoder_hidden_states=encoder_hidden_states,
        encoder_attention_mask=encoder_attention_mask,
        pooled_projections=pooled_projections,
        guidance=guidance,
        image_embeds=image_embeddings,
        indices_latents=latent_indices[0],
        latents_clean=clean_latents.to(dtype),
        indices_latents_clean=clean_latent_indices[0],
        latents_history_2x=clean_latents_2x.to(dtype),
        indices_latents_history_2x=clean_latent_2x_indices[0],
        latents_history_4x=clean_latents_4x.to(dtype),
        indices_latents_history_4x=clean_latent_4x_indices[0],
        return_dict=False,
    )[0]


def sample_hunyuan(
    transformer, *, width, height, frames, real_guidance_scale, distilled_guidance_scale,
    num_inference_steps, generator, prompt_embeds, prompt_embeds_mask, prompt_poolers,
    negative_prompt_embeds, negative_prompt_embeds_mask, negative_prompt_poolers, dtype,
    device, **kwargs,
):  # fmt: skip
    latents = torch.randn(
        (1, 16, (frames + 3) // 4, height // 8, width // 8),
        generator=generator,
        device=generator.device,
    ).to(device=device, dtype=torch.float32)
    _, _, t, h, w = latents.shape
    mu = calculate_flux_mu(t * h * w // 4, exp_max=7.0)
    sigmas = get_flux_sigmas_from_mu(num_inference_steps, mu).to(device)
    k_model = fm_wrapper(transformer)
    distilled_guidance = torch.tensor([distilled_guidance_scale * 1000.0]).to(
        device=device, dtype=dtype
    )
    extra = {
        "dtype": dtype,
        "cfg_scale": real_guidance_scale,
        "positive": {
            "pooled_projections": prompt_poolers,
            "encoder_hidden_states": prompt_embeds,
            "encoder_attention_mask": prompt_embeds_mask,
            "guidance": distilled_guidance,
            **kwargs,
        },
        "negative": {
            "pooled_projections": negative_prompt_poolers,
            "encoder_hidden_states": negative_prompt_embeds,
            "encoder_attention_mask": negative_prompt_embeds_mask,
            "guidance": distilled_guidance,
            **kwargs,
        },
    }
    return sample_unipc(lambda x, s: k_model(x, s, **extra), latents, sigmas)


# --- diffusers_helper/hunyuan.py, utils.py, clip_vision.py ---------------------------------


def crop_or_pad_yield_mask(x: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, f, c = x.shape
    if f < length:
        y = torch.zeros((b, length, c), dtype=x.dtype, device=x.device)
        mask = torch.zeros((b, length), dtype=torch.bool, device=x.device)
        y[:, :f, :] = x
        mask[:, :f] = True
        return y, mask
    return x[:, :length, :], torch.ones((b, length), dtype=torch.bool, device=x.device)


def encode_prompt_conds(
    prompt: str, c: Components, max_length: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    crop_start = c.prompt_template["crop_start"]
    inputs = c.tokenizer(
        [c.prompt_template["template"].format(prompt)],
        padding="max_length",
        max_length=max_length + crop_start,
        truncation=True,
        return_tensors="pt",
        return_length=False,
        return_overflowing_tokens=False,
        return_attention_mask=True,
    )
    input_ids, attention_mask = inputs.input_ids, inputs.attention_mask
    attention_length = int(attention_mask.sum())
    outputs = c.text_encoder(
        input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
    )
    llama_vec = outputs.hidden_states[-3][:, crop_start:attention_length]
    assert torch.all(attention_mask[:, crop_start:attention_length].bool())
    clip_ids = c.tokenizer_2(
        [prompt],
        padding="max_length",
        max_length=77,
        truncation=True,
        return_overflowing_tokens=False,
        return_length=False,
        return_tensors="pt",
    ).input_ids
    clip_l_pooler = c.text_encoder_2(clip_ids, output_hidden_states=False).pooler_output
    return llama_vec, clip_l_pooler


def vae_encode(image: torch.Tensor, vae) -> torch.Tensor:
    # the demo: .latent_dist.sample() from the unseeded global generator; here its mean
    latents = vae.encode(image.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
    return latents * vae.config.scaling_factor


def vae_decode(latents: torch.Tensor, vae) -> torch.Tensor:
    latents = latents / vae.config.scaling_factor
    return vae.decode(latents.to(device=vae.device, dtype=vae.dtype)).sample


def hf_clip_vision_encode(image: np.ndarray, feature_extractor, image_encoder):
    assert isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
    assert image.dtype == np.uint8
    preprocessed = feature_extractor.preprocess(images=image, return_tensors="pt").to(
        device=image_encoder.device, dtype=image_encoder.dtype
    )
    return image_encoder(**preprocessed)


def soft_append_bcthw(history: torch.Tensor, current: torch.Tensor, overlap: int) -> torch.Tensor:
    if overlap <= 0:
        return torch.cat([history, current], dim=2)
    weights = torch.linspace(1, 0, overlap, dtype=history.dtype, device=history.device)
    weights = weights.view(1, 1, -1, 1, 1)
    blended = weights * history[:, :, -overlap:] + (1 - weights) * current[:, :, :overlap]
    return torch.cat([history[:, :, :-overlap], blended, current[:, :, overlap:]], dim=2).to(
        history
    )


def to_uint8_frames(x: torch.Tensor) -> np.ndarray:
    """save_bcthw_as_mp4's conversion, before the codec: (T, H, W, 3) uint8."""
    x = torch.clamp(x.float(), -1.0, 1.0) * 127.5 + 127.5
    return x.to(torch.uint8)[0].permute(1, 2, 3, 0).numpy()


# --- demo_gradio.py / demo_gradio_f1.py: worker() ------------------------------------------


@dataclass(frozen=True)
class DemoJob:
    rgb: np.ndarray  # the picture, already at its bucket size (H, W, 3) uint8
    prompt: str
    seed: int
    seconds: float
    steps: int
    gs: float = 10.0  # distilled guidance
    cfg: float = 1.0
    n_prompt: str = ""
    latent_window_size: int = 9


def use_fp32_output(transformer: torch.nn.Module) -> None:
    """high_quality_fp32_output_for_inference: proj_out upcast, its input cast to float32."""
    if getattr(transformer, "_demo_fp32_output", False):
        return
    transformer.proj_out.to(torch.float32)
    transformer.proj_out.register_forward_pre_hook(lambda _m, args: (args[0].float(),))
    transformer._demo_fp32_output = True


@torch.no_grad()
def demo_frames(c: Components, job: DemoJob, *, f1: bool) -> np.ndarray:
    """The video the demo renders for `job`, as uint8 frames (T, H, W, 3)."""
    transformer, vae = c.transformer, c.vae
    use_fp32_output(transformer)
    dtype = transformer.dtype
    cpu = torch.device("cpu")

    llama_vec, clip_l_pooler = encode_prompt_conds(job.prompt, c)
    if job.cfg == 1:
        llama_vec_n, clip_l_pooler_n = torch.zeros_like(llama_vec), torch.zeros_like(clip_l_pooler)
    else:
        llama_vec_n, clip_l_pooler_n = encode_prompt_conds(job.n_prompt, c)
    llama_vec, llama_attention_mask = crop_or_pad_yield_mask(llama_vec, length=512)
    llama_vec_n, llama_attention_mask_n = crop_or_pad_yield_mask(llama_vec_n, length=512)

    height, width = job.rgb.shape[:2]
    input_image_pt = torch.from_numpy(job.rgb).float() / 127.5 - 1
    input_image_pt = input_image_pt.permute(2, 0, 1)[None, :, None]
    start_latent = vae_encode(input_image_pt, vae)
    image_encoder_last_hidden_state = hf_clip_vision_encode(
        job.rgb, c.feature_extractor, c.image_encoder
    ).last_hidden_state

    llama_vec, llama_vec_n = llama_vec.to(dtype), llama_vec_n.to(dtype)
    clip_l_pooler, clip_l_pooler_n = clip_l_pooler.to(dtype), clip_l_pooler_n.to(dtype)
    image_encoder_last_hidden_state = image_encoder_last_hidden_state.to(dtype)

    rnd = torch.Generator("cpu").manual_seed(job.seed)
    lws = job.latent_window_size
    num_frames = lws * 4 - 3
    total_latent_sections = int(max(round((job.seconds * 30) / (lws * 4)), 1))

    def sample(**indices_and_latents: torch.Tensor) -> torch.Tensor:
        return sample_hunyuan(
            transformer, width=width, height=height, frames=num_frames,
            real_guidance_scale=job.cfg, distilled_guidance_scale=job.gs,
            num_inference_steps=job.steps, generator=rnd, prompt_embeds=llama_vec,
            prompt_embeds_mask=llama_attention_mask, prompt_poolers=clip_l_pooler,
            negative_prompt_embeds=llama_vec_n, negative_prompt_embeds_mask=llama_attention_mask_n,
            negative_prompt_poolers=clip_l_pooler_n, dtype=dtype, device=cpu,
            image_embeddings=image_encoder_last_hidden_state, **indices_and_latents,
        )  # fmt: skip

    history_pixels = None
    if not f1:
        history_latents = torch.zeros((1, 16, 1 + 2 + 16, height // 8, width // 8))
        total_generated_latent_frames = 0
        latent_paddings = list(reversed(range(total_latent_sections)))
        if total_latent_sections > 4:
            latent_paddings = [3] + [2] * (total_latent_sections - 3) + [1, 0]
        for latent_padding in latent_paddings:
            is_last_section = latent_padding == 0
            latent_padding_size = latent_padding * lws
            indices = torch.arange(0, sum([1, latent_padding_size, lws, 1, 2, 16])).unsqueeze(0)
            (pre, _blank, latent_indices, post, idx_2x, idx_4x) = indices.split(
                [1, latent_padding_size, lws, 1, 2, 16], dim=1
            )
            clean_latent_indices = torch.cat([pre, post], dim=1)
            clean_latents_pre = start_latent.to(history_latents)
            clean_latents_post, clean_latents_2x, clean_latents_4x = history_latents[
                :, :, : 1 + 2 + 16
            ].split([1, 2, 16], dim=2)
            clean_latents = torch.cat([clean_latents_pre, clean_latents_post], dim=2)
            generated_latents = sample(
                latent_indices=latent_indices, clean_latents=clean_latents,
                clean_latent_indices=clean_latent_indices, clean_latents_2x=clean_latents_2x,
                clean_latent_2x_indices=idx_2x, clean_latents_4x=clean_latents_4x,
                clean_latent_4x_indices=idx_4x,
            )  # fmt: skip
            if is_last_section:
                generated_latents = torch.cat(
                    [start_latent.to(generated_latents), generated_latents], dim=2
                )
            total_generated_latent_frames += int(generated_latents.shape[2])
            history_latents = torch.cat(
                [generated_latents.to(history_latents), history_latents], dim=2
            )
            real_history_latents = history_latents[:, :, :total_generated_latent_frames, :, :]
            if history_pixels is None:
                history_pixels = vae_decode(real_history_latents, vae).cpu()
            else:
                section_latent_frames = (lws * 2 + 1) if is_last_section else (lws * 2)
                overlapped_frames = lws * 4 - 3
                current_pixels = vae_decode(
                    real_history_latents[:, :, :section_latent_frames], vae
                ).cpu()
                history_pixels = soft_append_bcthw(
                    current_pixels, history_pixels, overlapped_frames
                )
            if is_last_section:
                break
    else:
        history_latents = torch.zeros((1, 16, 16 + 2 + 1, height // 8, width // 8))
        history_latents = torch.cat([history_latents, start_latent.to(history_latents)], dim=2)
        total_generated_latent_frames = 1
        for _section_index in range(total_latent_sections):
            indices = torch.arange(0, sum([1, 16, 2, 1, lws])).unsqueeze(0)
            start_idx, idx_4x, idx_2x, idx_1x, latent_indices = indices.split(
                [1, 16, 2, 1, lws], dim=1
            )
            clean_latent_indices = torch.cat([start_idx, idx_1x], dim=1)
            clean_latents_4x, clean_latents_2x, clean_latents_1x = history_latents[
                :, :, -sum([16, 2, 1]) :, :, :
            ].split([16, 2, 1], dim=2)
            clean_latents = torch.cat([start_latent.to(history_latents), clean_latents_1x], dim=2)
            generated_latents = sample(
                latent_indices=latent_indices, clean_latents=clean_latents,
                clean_latent_indices=clean_latent_indices, clean_latents_2x=clean_latents_2x,
                clean_latent_2x_indices=idx_2x, clean_latents_4x=clean_latents_4x,
                clean_latent_4x_indices=idx_4x,
            )  # fmt: skip
            total_generated_latent_frames += int(generated_latents.shape[2])
            history_latents = torch.cat(
                [history_latents, generated_latents.to(history_latents)], dim=2
            )
            real_history_latents = history_latents[:, :, -total_generated_latent_frames:, :, :]
            if history_pixels is None:
                history_pixels = vae_decode(real_history_latents, vae).cpu()
            else:
                section_latent_frames = lws * 2
                overlapped_frames = lws * 4 - 3
                current_pixels = vae_decode(
                    real_history_latents[:, :, -section_latent_frames:], vae
                ).cpu()
                history_pixels = soft_append_bcthw(
                    history_pixels, current_pixels, overlapped_frames
                )
    assert history_pixels is not None
    return to_uint8_frames(history_pixels)
