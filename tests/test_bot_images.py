"""Pictures users send: every bad kind is refused with a reason."""

from __future__ import annotations

import functools
import io
import struct
import time
import zlib

import pytest
from PIL import Image

from bot.images import check_image
from bot.requests import UserError


def picture(fmt: str = "PNG", size: tuple[int, int] = (200, 120), **kw) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=fmt, **kw)
    return out.getvalue()


def check(data: bytes, **kw):
    return check_image(
        data, max_bytes=kw.pop("max_bytes", 20_000_000), max_pixels=kw.pop("max_pixels", 40_000_000)
    )


def test_clean_png_jpeg_webp_are_kept_as_sent() -> None:
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")):
        data = picture(fmt)
        out = check(data)
        assert (out.width, out.height) == (200, 120)
        assert out.data == data and out.suffix == suffix  # no re-encoding, no quality lost


def test_exif_orientation_is_applied_and_the_metadata_dropped() -> None:
    img = Image.new("RGB", (200, 100))
    exif = img.getexif()
    exif[0x0112] = 6  # rotated 90°: shown as 100×200
    exif[0x010F] = "PhoneMaker"  # and the camera's make, which stays with the user
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif)
    checked = check(out.getvalue())
    assert (checked.width, checked.height) == (100, 200) and checked.suffix == ".png"
    stored = Image.open(io.BytesIO(checked.data))
    assert stored.format == "PNG" and stored.size == (100, 200) and not stored.getexif()


def test_other_formats_are_stored_as_png() -> None:
    checked = check(picture("BMP"))
    assert checked.suffix == ".png" and Image.open(io.BytesIO(checked.data)).format == "PNG"


def test_not_an_image() -> None:
    with pytest.raises(UserError, match="not a picture I can read"):
        check(b"%PDF-1.4 hello")


def test_corrupt_image() -> None:
    noisy = Image.effect_noise((300, 300), 60).convert("RGB")  # a picture that fills its file
    for fmt in ("PNG", "JPEG", "WEBP"):
        out = io.BytesIO()
        noisy.save(out, format=fmt)
        data = out.getvalue()
        with pytest.raises(UserError, match=r"damaged|not a picture"):
            check(data[: len(data) // 2])


def test_too_many_bytes() -> None:
    with pytest.raises(UserError, match=r"the most is 1 kB"):
        check(picture("PNG", (400, 400)), max_bytes=1000)


@functools.cache
def png_bomb(side: int) -> bytes:
    """An RGB PNG `side` pixels square of zeros: 236 kB for 9000², which decoding
    turns into 243 MB (and most of a second)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)
    pixels = b"".join([*(packer.compress(row) for _ in range(side)), packer.flush()])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_too_many_pixels_is_refused_from_the_header_before_any_decoding() -> None:
    """81 megapixels in 236 kB, under Pillow's own bomb limit (89 M) and over ours. A
    check that decoded before it looked would spend most of a second and 243 MB on it."""
    bomb = png_bomb(9000)
    assert len(bomb) < 300_000
    started = time.perf_counter()
    with pytest.raises(UserError, match="9000×9000 pixels; the most is 40 megapixels"):
        check(bomb)
    assert time.perf_counter() - started < 0.2


def test_a_bomb_past_pillows_own_limit_is_refused_too() -> None:
    with pytest.raises(UserError, match=r"megapixels|too many pixels"):
        check(png_bomb(12000))


def test_animated() -> None:
    frames = [Image.new("RGB", (64, 64), (i * 80, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(UserError, match="animated"):
        check(out.getvalue())


def test_tiny_image() -> None:
    with pytest.raises(UserError, match="at least 32 pixels"):
        check(picture("PNG", (10, 10)))
