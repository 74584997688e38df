"""The `tiny` preset: the real FramePack architecture at toy sizes, built in code.

Every class is the one the real checkpoints load into (the diffusers transformer
and VAE, transformers' Llama, CLIP and SigLIP, fast tokenizers), with random
weights drawn from a fixed seed, so the same code paths run on a CPU in seconds
and nothing is fetched from the network. Its videos are coloured noise.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackTransformer3DModel
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from framepack.engine.solvers import pipeline_scheduler
from framepack.models.components import Components
from framepack.models.processors import siglip_processor_class
from framepack.models.prompt_template import llama_prompt_template

TINY_SEED = 20250417  # FramePack's release date: any fixed number would do
TEXT_DIM = 16  # Llama hidden size, the transformer's text_embed_dim
POOLED_DIM = 16  # CLIP hidden size, the transformer's pooled_projection_dim
IMAGE_DIM = 16  # SigLIP hidden size, the transformer's image_proj_dim
IMAGE_SIZE = 32  # SigLIP input side


def _byte_tokenizer(
    *, bos: str, eos: str, add_eos: bool, specials: tuple[str, ...], max_length: int
) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer without merges: every byte of every prompt is a token,
    so distinct prompts always give distinct ids (unlike a word list with [UNK])."""
    # the 256 printable stand-ins of bytes that byte-level BPE (GPT-2, Llama 3) uses
    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([bos, eos, *specials])
    bos_id, eos_id = backend.token_to_id(bos), backend.token_to_id(eos)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}" if add_eos else f"{bos} $A",
        special_tokens=[(bos, bos_id), (eos, eos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=eos,
        model_max_length=max_length,
    )


def llama_tokenizer() -> PreTrainedTokenizerFast:
    return _byte_tokenizer(
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        add_eos=False,  # like Llama 3: a prompt starts with BOS and has no end token
        specials=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        max_length=4096,
    )


def clip_tokenizer() -> PreTrainedTokenizerFast:
    # CLIP pools the hidden state of the first end token, so every prompt must end with one.
    return _byte_tokenizer(
        bos="<|startoftext|>", eos="<|endoftext|>", add_eos=True, specials=(), max_length=77
    )


def build_tiny_components(
    *, dtype: torch.dtype = torch.float32, seed: int = TINY_SEED
) -> Components:
    """The tiny model, identical for a given seed on every machine."""
    tokenizer = llama_tokenizer()
    tokenizer_2 = clip_tokenizer()
    feature_extractor = siglip_processor_class()(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = LlamaModel(
            LlamaConfig(
                vocab_size=len(tokenizer),
                hidden_size=TEXT_DIM,
                intermediate_size=32,
                num_hidden_layers=3,  # the pipeline reads hidden_states[-3]
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=2048,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
        text_encoder_2 = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer_2),
                hidden_size=POOLED_DIM,
                intermediate_size=32,
                projection_dim=POOLED_DIM,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=77,
                bos_token_id=tokenizer_2.bos_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
                pad_token_id=tokenizer_2.pad_token_id,
            )
        )
        image_encoder = SiglipVisionModel(
            SiglipVisionConfig(
                hidden_size=IMAGE_DIM,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=IMAGE_SIZE,
                patch_size=8,
            )
        )
        # The decoder's full-resolution 3D convolutions are most of a tiny job's time:
        # 4 channels, one resnet per block and no attention keep a section under a second.
        vae = AutoencoderKLHunyuanVideo(
            latent_channels=16,  # the transformer's channels: fixed by the architecture
            block_out_channels=(4, 4, 4, 4),
            layers_per_block=0,
            norm_num_groups=2,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
            mid_block_add_attention=False,
        )
        # Decoding all frames at once is 3x faster here than the default temporal tiles
        # (PyTorch's CPU convolution takes a slow path for short clips).
        vae.use_framewise_decoding = False
        transformer = HunyuanVideoFramepackTransformer3DModel(
            in_channels=16,
            out_channels=16,
            num_attention_heads=2,
            attention_head_dim=16,
            num_layers=1,
            num_single_layers=1,
            num_refiner_layers=1,
            patch_size=2,
            patch_size_t=1,
            text_embed_dim=TEXT_DIM,
            pooled_projection_dim=POOLED_DIM,
            rope_axes_dim=(4, 6, 6),
            has_image_proj=True,
            image_proj_dim=IMAGE_DIM,
            has_clean_x_embedder=True,
        )
    models_ = (text_encoder, text_encoder_2, image_encoder, vae, transformer)
    for model in models_:
        if dtype != torch.float32:  # built in float32; diffusers warns about a needless cast
            model.to(dtype=dtype)
        model.eval().requires_grad_(False)
    return Components(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
        scheduler=pipeline_scheduler(),
        preset="tiny",
        is_random=True,
        prompt_template=llama_prompt_template(tokenizer),
    )
