"""A job's state after its last finished section, so that it resumes exactly there.

One safetensors file: the latent history, the start (and end) image latents, the
random generator's state, and in its metadata the number of finished sections,
how the history is laid out (which end grows, how many frames it began with)
and a fingerprint of the job (its settings, its images and the model). A file
with another fingerprint, or one that cannot be read, is ignored: the job starts
over. Written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from storage.files import CHECKPOINT_NAME

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_NAME", "Checkpoint", "load_checkpoint", "read_checkpoint", "save_checkpoint"]
# 2: the start latent is the VAE posterior's mean and the generator draws only the
# section noises; a format-1 file (a sampled latent, a generator one draw ahead)
# would resume into frames that no uninterrupted run gives.
FORMAT = "2"


@dataclass
class Checkpoint:
    fingerprint: str
    sections_done: int
    generated: int  # real latent frames in `history`
    history: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor | None
    rng_state: torch.Tensor  # torch.Generator.get_state() of the CPU generator of the noises
    prepends: bool = True  # whether new sections went in front (the inverted sampler)
    carried: int = 0  # real frames the history held before the first section

    def real(self) -> torch.Tensor:
        """The real latent frames of the video, in video order (what an extension reads)."""
        if self.prepends:
            return self.history[:, :, : self.generated]
        return self.history[:, :, self.history.shape[2] - self.generated :]


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    tensors = {
        "history": checkpoint.history.detach().to("cpu", torch.float32).contiguous(),
        "start": checkpoint.start.detach().to("cpu", torch.float32).contiguous(),
        "rng_state": checkpoint.rng_state.cpu().contiguous(),
    }
    if checkpoint.end is not None:
        tensors["end"] = checkpoint.end.detach().to("cpu", torch.float32).contiguous()
    metadata = {
        "format": FORMAT,
        "fingerprint": checkpoint.fingerprint,
        "sections_done": str(checkpoint.sections_done),
        "generated": str(checkpoint.generated),
        "prepends": "1" if checkpoint.prepends else "0",
        "carried": str(checkpoint.carried),
    }
    partial = path.with_name(path.name + ".part")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)


def load_checkpoint(path: Path, fingerprint: str) -> Checkpoint | None:
    """The checkpoint at `path` if it belongs to the job with `fingerprint`, else None."""
    if not path.is_file():
        return None
    try:
        saved = read_checkpoint(path)
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if saved.fingerprint != fingerprint:
        log.info("ignoring %s: it belongs to other settings or another version", path)
        return None
    return saved


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at `path`, whichever job it belongs to (an extension reads its
    source's). Raises ValueError for a file of another version, OSError or
    SafetensorError for one that cannot be read."""
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"checkpoint format {metadata.get('format')!r}, not {FORMAT}")
        keys = set(file.keys())
        history = file.get_tensor("history")
        if "prepends" in metadata:
            prepends, carried = metadata["prepends"] == "1", int(metadata["carried"])
        else:  # written before extensions: a forward history begins with its blank context
            prepends = not bool(history[:, :, 0].eq(0).all())
            carried = 0 if prepends else 1
        return Checkpoint(
            fingerprint=metadata["fingerprint"],
            sections_done=int(metadata["sections_done"]),
            generated=int(metadata["generated"]),
            history=history,
            start=file.get_tensor("start"),
            end=file.get_tensor("end") if "end" in keys else None,
            rng_state=file.get_tensor("rng_state"),
            prepends=prepends,
            carried=carried,
        )
