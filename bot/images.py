"""Checking a picture a user sent, and storing it for the worker.

Pillow only: the bot process never imports torch. A picture that is not an
image, is corrupt, too large in bytes or pixels (a decompression bomb), or
animated is refused with a `UserError` that says how to fix it.

A picture that passes is decoded in full (so a damaged one is refused now, not
when its turn comes) but stored as the user's own bytes when they are a plain
JPEG, PNG or WebP without metadata, as Telegram's photos are: re-encoding a
640×480 picture as PNG costs ~40 ms of CPU, twenty times the check itself, and
a hundred users who send at once would wait for it. A picture with EXIF data
(a phone's location, an orientation) or in another format is stored as a
clean, upright PNG.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from bot.formatting import format_bytes
from bot.requests import UserError
from storage.files import DataDir

MIN_SIDE = 32


# Formats the worker reads as they come, by the file name's suffix.
KEPT_AS_SENT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
# What Pillow calls the metadata a picture may carry (a camera's, a location).
METADATA = {"exif", "xmp", "XML:com.adobe.xmp"}


@dataclass(frozen=True)
class CheckedImage:
    data: bytes  # the user's own bytes when clean, else a PNG: upright, RGB, no metadata
    suffix: str  # ".jpg", ".png" or ".webp"
    width: int
    height: int


def check_image(
    data: bytes, *, max_bytes: int, max_pixels: int, what: str = "picture"
) -> CheckedImage:
    """Validate `data` and return what the worker will read, or raise `UserError`."""
    if len(data) > max_bytes:
        raise UserError(
            f"The {what} is {format_bytes(len(data))}; the most is {format_bytes(max_bytes)}. "
            "Send a smaller one (a screenshot or a JPEG works)."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise UserError(
                        f"The {what} is {width}×{height} pixels; the most is "
                        f"{max_pixels / 1e6:.0f} megapixels. Please send a smaller one."
                    )
                if getattr(probe, "is_animated", False) and getattr(probe, "n_frames", 1) > 1:
                    raise UserError(
                        f"The {what} is animated. Send a still picture (PNG, JPEG or WebP)."
                    )
                probe.verify()
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                clean = fmt in KEPT_AS_SENT and not img.getexif() and not METADATA & img.info.keys()
                if clean and fmt == "JPEG":
                    # Decoding at 1/8 scale still reads every coded block, so a
                    # damaged file fails here as well, at half the cost.
                    img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                img.load()
                if not clean:
                    rgb = ImageOps.exif_transpose(img).convert("RGB")
    except UserError:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise UserError(
                f"That is not a picture I can read. Send a PNG, JPEG or WebP {what}."
            ) from None
        raise UserError(f"The {what} has too many pixels. Please send a smaller one.") from None
    except (OSError, SyntaxError, ValueError):
        raise UserError(
            f"The {what} is damaged and cannot be read. Please send it again or try another."
        ) from None
    if min(width, height) < MIN_SIDE:
        raise UserError(
            f"The {what} is only {width}×{height} pixels; send one at least "
            f"{MIN_SIDE} pixels on each side."
        )
    if clean:
        return CheckedImage(data=data, suffix=KEPT_AS_SENT[fmt], width=width, height=height)
    out = io.BytesIO()
    rgb.save(out, format="PNG", compress_level=1)  # 3x faster than the default 6, 4% larger
    return CheckedImage(data=out.getvalue(), suffix=".png", width=rgb.width, height=rgb.height)


def save_input(image: CheckedImage, data: DataDir) -> Path:
    """Store a checked picture in the data dir (before the job that uses it is queued).

    Written in place under a new random name: nothing reads it before its job is
    queued, so a crash halfway leaves only an orphan that retention removes (a
    temporary file and a rename cost as much as the write, in a burst).
    """
    path = data.new_input_path(image.suffix)
    try:
        out = path.open("xb")
    except FileNotFoundError:  # the first picture, or the folder was removed
        path.parent.mkdir(parents=True, exist_ok=True)
        out = path.open("xb")
    with out:
        out.write(image.data)
    return path


def thumbnail(path: str | Path, max_side: int, *, quality: int = 88) -> bytes:
    """A JPEG of the picture at `path`, upright, at most `max_side` pixels a side."""
    with Image.open(path) as image:
        small = ImageOps.exif_transpose(image).convert("RGB")
        small.thumbnail((max_side, max_side))
        out = io.BytesIO()
        small.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def shown_picture(path: str | Path, max_side: int, max_bytes: int) -> bytes:
    """The picture as a chat shows it: its own bytes when they are a small, plain PNG
    or JPEG (nothing to redo), else a `thumbnail`."""
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        plain = image.format in ("PNG", "JPEG") and not image.getexif()
        if plain and max(image.size) <= max_side and len(data) <= max_bytes:
            return data
    return thumbnail(path, max_side)
