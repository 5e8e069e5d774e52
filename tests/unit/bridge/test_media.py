"""Media across the bridge: images re-encoded without metadata, everything else refused;
encrypted attachments decrypted only when their hash matches; which Telegram file is taken."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from clubs.bridge.media import (
    MediaRefused,
    TelegramFile,
    caption,
    decrypt_file,
    largest_photo,
    matrix_media,
    sticker_emoji,
    strip_image,
    telegram_media,
)
from clubs.core.attachments import encrypt, encrypted_file

GPS_IFD = 0x8825
ORIENTATION = 0x0112
MAKE = 0x010F


def photo_with_gps(fmt: str = "JPEG", size: tuple[int, int] = (40, 20)) -> bytes:
    """A photo as a phone takes it: EXIF with the camera, GPS coordinates, a rotation, and a
    comment; red on the left half, so the rotation is visible in the pixels."""
    im = Image.new("RGB", size, (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    exif = Image.Exif()
    exif[MAKE] = "CanaryPhone 7c1f"
    exif[ORIENTATION] = 6  # rotate 90° clockwise to show it upright
    exif[GPS_IFD] = {1: "N", 2: (55.0, 45.0, 21.0), 3: "E", 4: (37.0, 37.0, 4.0)}
    out = io.BytesIO()
    extra = {"comment": b"canary-comment"} if fmt == "JPEG" else {}
    im.save(out, format=fmt, exif=exif, **extra)
    return out.getvalue()


def test_a_photo_loses_its_exif_and_gps_and_is_turned_upright() -> None:
    original = photo_with_gps()
    assert b"CanaryPhone" in original
    assert b"canary-comment" in original
    clean = strip_image(original)
    assert clean.mimetype == "image/jpeg"
    assert clean.filename == "image.jpg"
    for marker in (b"Exif", b"CanaryPhone", b"canary-comment", b"http://ns.adobe.com"):
        assert marker not in clean.data
    with Image.open(io.BytesIO(clean.data)) as im:
        assert not im.getexif()
        assert "icc_profile" not in im.info
        assert "comment" not in im.info
        assert (im.width, im.height) == (20, 40) == (clean.width, clean.height)  # upright
        pixel = im.convert("RGB").getpixel((10, 5))
        assert isinstance(pixel, tuple)
        r, _g, b = pixel
        assert r > 200
        assert b < 60


def test_an_image_with_transparency_stays_a_png_without_its_text_chunks() -> None:
    from PIL import PngImagePlugin

    im = Image.new("RGBA", (8, 8), (0, 255, 0, 128))
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "canary-author")
    out = io.BytesIO()
    im.save(out, format="PNG", pnginfo=info)
    clean = strip_image(out.getvalue())
    assert clean.mimetype == "image/png"
    assert b"canary-author" not in clean.data
    assert b"tEXt" not in clean.data
    with Image.open(io.BytesIO(clean.data)) as back:
        assert back.mode == "RGBA"
        assert back.getpixel((0, 0)) == (0, 255, 0, 128)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%PDF-1.7 canary", "undecodable"),
        (photo_with_gps()[:200], "undecodable"),
        (b"", "undecodable"),
    ],
)
def test_what_is_not_a_whole_image_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(MediaRefused) as e:
        strip_image(data)
    assert e.value.reason == reason


def test_a_huge_or_animated_image_is_refused_before_its_pixels_are_decoded() -> None:
    big = photo_with_gps(size=(400, 300))
    with pytest.raises(MediaRefused) as e:
        strip_image(big, max_pixels=100_000)
    assert e.value.reason == "too_large"
    frames = [Image.new("RGB", (4, 4), (i * 100, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(MediaRefused) as e:
        strip_image(out.getvalue())
    assert e.value.reason == "animated"


def test_an_encrypted_attachment_is_decrypted_only_when_its_hash_matches() -> None:
    sealed = encrypt(b"pixels")
    file = encrypted_file("mxc://hs/abc", sealed.keys)
    assert decrypt_file(sealed.ciphertext, file) == b"pixels"
    with pytest.raises(MediaRefused):
        decrypt_file(sealed.ciphertext[:-1] + b"x", file)
    for broken in ({**file, "v": "v1"}, {**file, "key": {"alg": "A256CTR"}}, {}):
        with pytest.raises(MediaRefused):
            decrypt_file(sealed.ciphertext, broken)


def test_matrix_media_and_captions() -> None:
    plain = {"msgtype": "m.image", "body": "a.jpg", "url": "mxc://hs/x", "info": {"size": 5}}
    assert matrix_media(plain) == matrix_media({**plain, "filename": "a.jpg"})
    media = matrix_media({**plain, "filename": "a.jpg", "body": "смотрите"})
    assert media is not None
    assert media.caption == "смотрите"
    assert media.size == 5
    assert matrix_media({"msgtype": "m.text", "body": "x"}) is None
    assert matrix_media({"msgtype": "m.image", "body": "x", "url": "https://x"}) is None
    assert matrix_media({"msgtype": "m.file", "body": "x", "file": 5}) is None
    enc = matrix_media({"msgtype": "m.image", "body": "x", "file": {"url": "mxc://hs/y"}})
    assert enc is not None
    assert enc.file == {"url": "mxc://hs/y"}
    assert enc.caption is None
    assert caption({"body": "x"}) is None


def test_which_telegram_file_is_taken() -> None:
    sizes = [
        {"file_id": "small", "width": 90, "height": 90, "file_size": 10},
        {"file_id": "big", "width": 1280, "height": 960, "file_size": 100},
        {"file_id": "huge", "width": 5000, "height": 5000, "file_size": 30 * 1024 * 1024},
        "junk",
    ]
    assert largest_photo(sizes) == TelegramFile("big", 100)
    assert telegram_media({"photo": sizes}) == TelegramFile("big", 100)
    assert telegram_media({"photo": [sizes[2]]}) == "refused"
    image_doc = {"file_id": "d", "mime_type": "image/png", "file_size": 3}
    assert telegram_media({"document": image_doc}) == TelegramFile("d", 3)
    assert telegram_media({"document": {**image_doc, "mime_type": "application/pdf"}}) == (
        "refused"
    )
    assert telegram_media({"voice": {}}) == "refused"
    assert telegram_media({"text": "x"}) is None


def test_a_sticker_crosses_as_its_emoji_and_nothing_else() -> None:
    assert sticker_emoji({"sticker": {"file_id": "s", "emoji": "👍"}}) == "👍"
    assert sticker_emoji({"sticker": {"file_id": "s"}}) is None
    assert sticker_emoji({"sticker": {"emoji": "text instead"}}) is None  # not an emoji
    assert sticker_emoji({"sticker": {"emoji": "😀" * 9}}) is None
    assert sticker_emoji({"sticker": "junk"}) is None
    assert sticker_emoji({"voice": {"emoji": "👍"}}) is None
