"""Pictures users send: every bad kind is refused with a reason."""

from __future__ import annotations

import io

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


def test_too_many_pixels_decompression_bomb() -> None:
    with pytest.raises(UserError, match="megapixels"):
        check(picture("PNG", (3000, 3000)), max_pixels=1_000_000)


def test_animated() -> None:
    frames = [Image.new("RGB", (64, 64), (i * 80, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(UserError, match="animated"):
        check(out.getvalue())


def test_tiny_image() -> None:
    with pytest.raises(UserError, match="at least 32 pixels"):
        check(picture("PNG", (10, 10)))
