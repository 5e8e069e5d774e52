"""Media across the bridge: images only, re-encoded so that no metadata crosses; the rest refused.

A photo carries more than its pixels: EXIF (the camera, its serial number, the time, and GPS
coordinates of where it was taken), XMP, IPTC, ICC profiles, comments, thumbnails of the
uncropped original. For people at risk a photo's GPS tag can name a flat. So an image crossing
the bridge, either way, is decoded and encoded again from its pixels only (`strip_image`): what
arrives is a new JPEG (or a PNG when the image has transparency) that holds nothing but pixels,
turned upright first as its EXIF orientation said. An image that cannot be decoded, is animated
or is absurdly large (a decompression bomb) is refused.

Files that are not images (documents, videos, voice messages, audio) are **refused**: their
metadata lives in many formats (PDF and Office authors and paths, MP4 GPS atoms, ID3 tags) that
the bridge cannot strip reliably, so it does not pretend to. Their caption (Telegram) or nothing
(Matrix) crosses instead, and the log says the media was refused (ids and a reason, never names).

Size limits, from the Bot API: a bot downloads at most 20 MB (`getFile`), uploads photos up to
10 MB and other files up to 50 MB (multipart). A Matrix image is never fetched when its announced
size is over 50 MB, and no download reads more than its limit; a re-encoded image over 10 MB goes
to Telegram as a document (still stripped). Towards Matrix the homeserver's own upload limit
(`m.upload.size`) applies too.

Encrypted rooms: a member's image arrives as an `EncryptedFile` (the spec's AES-256-CTR
attachment, key in the Megolm-encrypted event); it is decrypted here after its SHA-256 is
checked. An image from Telegram into an encrypted room is encrypted the same way
(`clubs.core.attachments`) and only ciphertext is uploaded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from PIL import Image, ImageOps, UnidentifiedImageError

from clubs.core.errors import ClubsError

MB = 1024 * 1024
TELEGRAM_DOWNLOAD_MAX = 20 * MB
"""`getFile`: a bot downloads files of at most 20 MB."""
TELEGRAM_PHOTO_MAX = 10 * MB
"""`sendPhoto` (multipart): photos of at most 10 MB."""
TELEGRAM_DOCUMENT_MAX = 50 * MB
"""`sendDocument` (multipart): other files of at most 50 MB."""
MATRIX_DOWNLOAD_MAX = 50 * MB
"""The most the bridge reads of a Matrix file (nothing bigger could go to Telegram anyway)."""
MAX_PIXELS = 40_000_000
"""Bigger images are refused before their pixels are decoded (a decompression bomb's defence)."""
NOT_RELAYED = "📎 файл не переслан / file not relayed"
"""Said in place of a file that does not cross (not an image, too large, unreadable), so the
other side knows something was shared and can ask for it another way."""
CAPTION_MAX = 1024
"""Telegram's caption limit, in characters after entity parsing."""
IMAGE_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP"})
MEDIA_MSGTYPES = frozenset({"m.image", "m.file", "m.video", "m.audio"})
JPEG_QUALITY = 90

Reason = Literal["not_an_image", "too_large", "undecodable", "animated", "damaged"]


class MediaRefused(ClubsError):
    """This file does not cross the bridge; `reason` says why (for the log: no names)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(f"media refused: {reason}")
        self.reason: Reason = reason


@dataclass(frozen=True)
class CleanImage:
    """An image re-encoded from its pixels only."""

    data: bytes
    mimetype: str
    width: int
    height: int

    @property
    def filename(self) -> str:
        return "image.png" if self.mimetype == "image/png" else "image.jpg"

    def __repr__(self) -> str:
        return f"CleanImage({self.mimetype}, {self.width}x{self.height}, {len(self.data)} bytes)"


def strip_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> CleanImage:
    """`data` decoded and encoded again without any metadata, upright; MediaRefused otherwise."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.format not in IMAGE_FORMATS:
                    raise MediaRefused("not_an_image")
                width, height = im.size
                if width * height > max_pixels or width <= 0 or height <= 0:
                    raise MediaRefused("too_large")
                if getattr(im, "is_animated", False):
                    raise MediaRefused("animated")
                im.load()
                upright = ImageOps.exif_transpose(im)
    except MediaRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaRefused("too_large") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise MediaRefused("undecodable") from None
    alpha = upright.mode in ("RGBA", "LA", "PA") or (
        upright.mode == "P" and "transparency" in upright.info
    )
    mode = "RGBA" if alpha else "RGB"
    pixels = upright.convert(mode)
    # A new image from the raw pixels: no info dictionary, no EXIF, no ICC, no text chunks.
    bare = Image.frombytes(mode, pixels.size, pixels.tobytes())
    out = io.BytesIO()
    if alpha:
        bare.save(out, format="PNG", optimize=False)
        mimetype = "image/png"
    else:
        bare.save(out, format="JPEG", quality=JPEG_QUALITY)
        mimetype = "image/jpeg"
    return CleanImage(out.getvalue(), mimetype, bare.width, bare.height)


@dataclass(frozen=True)
class MatrixMedia:
    """The file of a Matrix media message: a plain `url`, or an `EncryptedFile` (`file`)."""

    msgtype: str
    url: str
    file: Mapping[str, Any] | None
    size: int | None
    caption: str | None


def matrix_media(content: Mapping[str, Any]) -> MatrixMedia | None:
    """The media of a Matrix message content, or None when it is not a media message (or names
    no file)."""
    msgtype = content.get("msgtype")
    if msgtype not in MEDIA_MSGTYPES:
        return None
    file = content.get("file")
    url: object = None
    if isinstance(file, dict):
        url = file.get("url")
    else:
        file = None
        url = content.get("url")
    if not isinstance(url, str) or not url.startswith("mxc://"):
        return None
    info = content.get("info")
    size = info.get("size") if isinstance(info, dict) else None
    size = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
    return MatrixMedia(str(msgtype), url, file, size, caption(content))


def caption(content: Mapping[str, Any]) -> str | None:
    """A media message's caption: its `body` when a `filename` is set and differs from it (the
    spec's media captions); a body that is only the file's name is no caption."""
    body = content.get("body")
    filename = content.get("filename")
    if isinstance(body, str) and isinstance(filename, str) and body.strip() and body != filename:
        return body
    return None


def decrypt_file(ciphertext: bytes, file: Mapping[str, Any]) -> bytes:
    """The plaintext of an encrypted attachment (`EncryptedFile` v2, AES-256-CTR), after its
    SHA-256 is checked; MediaRefused("damaged") for anything malformed or not matching."""
    try:
        key = _unb64(str(file["key"]["k"]))
        iv = _unb64(str(file["iv"]))
        expected = _unb64(str(file["hashes"]["sha256"]))
        alg = file["key"].get("alg")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise MediaRefused("damaged") from None
    if alg != "A256CTR" or len(key) != 32 or len(iv) != 16 or file.get("v") != "v2":
        raise MediaRefused("damaged")
    if not hmac.compare_digest(hashlib.sha256(ciphertext).digest(), expected):
        raise MediaRefused("damaged")
    decryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


@dataclass(frozen=True)
class TelegramFile:
    """The one file of a Telegram message the bridge may relay (an image), by its file id."""

    file_id: str
    size: int | None


def telegram_media(message: Mapping[str, Any]) -> TelegramFile | Literal["refused"] | None:
    """The image of a Telegram message: the largest photo size a bot may download, or a
    document sent as an image file; "refused" for any other media; None for no media."""
    photo = message.get("photo")
    if isinstance(photo, list) and photo:
        best = largest_photo(photo)
        return best if best is not None else "refused"
    document = message.get("document")
    if isinstance(document, dict):
        mime = document.get("mime_type")
        file_id = document.get("file_id")
        if isinstance(mime, str) and mime.startswith("image/") and isinstance(file_id, str):
            size = document.get("file_size")
            return TelegramFile(file_id, size if isinstance(size, int) else None)
        return "refused"
    if any(
        key in message
        for key in ("video", "audio", "voice", "video_note", "animation", "sticker", "contact")
    ):
        return "refused"
    return None


def sticker_emoji(message: Mapping[str, Any]) -> str | None:
    """The emoji a Telegram sticker stands for (what crosses instead of the sticker)."""
    sticker = message.get("sticker")
    emoji = sticker.get("emoji") if isinstance(sticker, dict) else None
    if isinstance(emoji, str) and 0 < len(emoji) <= 8 and not any(c.isalnum() for c in emoji):
        return emoji
    return None


def largest_photo(sizes: Sequence[Any], limit: int = TELEGRAM_DOWNLOAD_MAX) -> TelegramFile | None:
    """The biggest `PhotoSize` within the download limit (by pixels; sizes of unknown bytes
    count as within it)."""
    best: tuple[int, TelegramFile] | None = None
    for s in sizes:
        if not isinstance(s, dict) or not isinstance(s.get("file_id"), str):
            continue
        size = s.get("file_size")
        size = size if isinstance(size, int) and not isinstance(size, bool) else None
        if size is not None and size > limit:
            continue
        w, h = s.get("width"), s.get("height")
        pixels = w * h if isinstance(w, int) and isinstance(h, int) else 0
        if best is None or pixels > best[0]:
            best = (pixels, TelegramFile(str(s["file_id"]), size))
    return best[1] if best is not None else None


def image_content(
    image: CleanImage, body: str, *, url: str | None = None, file: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An `m.image` message: a plain `url`, or an encrypted `file` (never both)."""
    content: dict[str, Any] = {
        "msgtype": "m.image",
        "body": body,
        "filename": image.filename,
        "info": {
            "mimetype": image.mimetype,
            "size": len(image.data),
            "w": image.width,
            "h": image.height,
        },
        "m.mentions": {},
    }
    if file is not None:
        content["file"] = dict(file)
    else:
        content["url"] = url
    return content


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
