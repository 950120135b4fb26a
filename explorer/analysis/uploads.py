"""Uploaded images turned into dataset images: checked first, converted second, every change reported.

People drop whatever they have: phone photos (EXIF-rotated JPEG), screenshots with transparency, palette
PNGs, 16-bit scans, CMYK JPEGs from print work, or files that are not images at all. ``read_upload``
either returns a uint8 image of the dataset's channels and size plus notes that say what was changed, or
raises ``UploadError`` with a message a person can act on. Limits are checked before pixels are decoded,
so a decompression bomb costs nothing.

Memory stays proportional to the decoded image: a large picture is shrunk by an integer factor right after
decoding (JPEGs are decoded at a reduced scale to begin with), to ``DETAIL`` times the dataset's side, before
any mode conversion; conversions run on uint8 or float32 pixels of the shrunk image. A 40-megapixel RGBA PNG
costs its decoded 160 MB, not the gigabytes of float64 copies at full size.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from explorer.data import Dataset
from explorer.native_memory import return_freed_memory

__all__ = ["ALLOWED_FORMATS", "MAX_BYTES", "MAX_PIXELS", "MAX_PIXELS_OF_FORMAT", "Upload", "UploadError", "read_upload"]

ALLOWED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP", "BMP": "BMP"}  # MPO: phone JPEGs
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
# Formats PIL decodes at full size through extra buffers: WebP (libwebp's decoder) costs about 15 bytes per pixel,
# four times a PNG's, so its limit keeps its decoding within a 40-megapixel PNG's memory (about 300 MB).
MAX_PIXELS_OF_FORMAT = {"WEBP": 20_000_000}
# An upload of at least this many pixels frees tens of MB of decoded blocks, which glibc keeps in the arena of the
# worker thread that decoded it unless asked to give them back (explorer.native_memory).
RETURN_MEMORY_PIXELS = 4_000_000
DETAIL = 4  # shrink large uploads to this many times the dataset's side before converting them (Lanczos after)
_FORMATS_TEXT = "PNG, JPEG, WebP or BMP"


class UploadError(ValueError):
    """An upload that cannot be used; the message says why and what to upload instead."""


@dataclass(frozen=True)
class Upload:
    image: Tensor  # uint8 [C, H, W], the dataset's channels and size
    notes: list[str] = field(default_factory=list)  # every conversion made, for the user to see


def _open_checked(path: Path) -> Image.Image:
    """Open without decoding pixels, after the size checks; refuse what is not an allowed image."""
    name = path.name
    if not path.is_file():
        raise UploadError(f"{name}: the uploaded file is missing; upload it again")
    size = os.path.getsize(path)
    if size == 0:
        raise UploadError(f"{name} is empty (0 bytes); upload a {_FORMATS_TEXT} image")
    if size > MAX_BYTES:
        raise UploadError(f"{name} is {size / 2**20:.1f} MB; images up to {MAX_BYTES // 2**20} MB are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise UploadError(f"{name} is not an image this app can read; upload a {_FORMATS_TEXT} image") from None
        raise UploadError(f"{name} has too many pixels; images up to {MAX_PIXELS // 10**6} megapixels "
                          "are accepted") from None
    except (OSError, ValueError) as exc:  # ValueError: PIL's limit on a zTXt or iCCP chunk before the pixels
        if isinstance(exc, ValueError) and "too large" in str(exc):
            raise _metadata_refused(name) from None
        raise UploadError(f"{name} could not be read ({exc}); upload a {_FORMATS_TEXT} image") from None
    if img.format not in ALLOWED_FORMATS:
        img.close()
        raise UploadError(f"{name} is a {img.format} image; upload a {_FORMATS_TEXT} image")
    width, height = img.size  # from the header: nothing is decoded yet
    limit = MAX_PIXELS_OF_FORMAT.get(img.format, MAX_PIXELS)
    if width * height > limit:
        img.close()
        kind = f"{ALLOWED_FORMATS[img.format]} images" if img.format in MAX_PIXELS_OF_FORMAT else "images"
        raise UploadError(f"{name} is {width}x{height} = {width * height / 1e6:.1f} megapixels; {kind} up to "
                          f"{limit // 10**6} megapixels are accepted")
    if width == 0 or height == 0:
        img.close()
        raise UploadError(f"{name} has no pixels ({width}x{height})")
    return img


def _metadata_refused(name: str) -> UploadError:
    """The refusal of a PNG whose compressed text (zTXt, iTXt) or colour profile (iCCP) inflates past PIL's limit:
    PIL's own message names its internals (``PngImagePlugin.MAX_TEXT_CHUNK``), not what to do."""
    return UploadError(f"{name} holds a compressed text or colour-profile chunk that expands beyond what is read "
                       "safely; save the image again without its metadata, or upload another image")


def _decode(img: Image.Image, name: str, side: int) -> Image.Image:
    """Decode the pixels (a JPEG at the smallest scale whose sides stay >= ``side``); a truncated or corrupt file
    becomes an UploadError."""
    try:
        if img.format == "JPEG":
            img.draft(None, (side, side))
        img.load()
    except ValueError as exc:  # a zTXt or iCCP chunk after the pixels is read here
        if "too large" in str(exc):
            raise _metadata_refused(name) from None
        raise UploadError(f"{name} is corrupt or truncated ({exc}); upload the image again or another one") from None
    except (OSError, SyntaxError) as exc:
        raise UploadError(f"{name} is corrupt or truncated ({exc}); upload the image again or another one") from None
    return img


def _shrink(img: Image.Image, side: int) -> Image.Image:
    """``img`` reduced by the largest integer factor that keeps its longer side >= ``side`` (box filter: every
    pixel counts); 16-bit, palette and bilevel images, which PIL cannot reduce in their mode, are widened first
    (to 32-bit integers, RGBA or L)."""
    factor = max(img.size) // side
    if factor < 2:
        return img
    if img.mode.startswith("I;16"):
        img = img.convert("I")
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    return img.reduce(factor)


def _to_plain_mode(img: Image.Image, notes: list[str]) -> Image.Image:
    """Any PIL mode -> "L" or "RGB", transparency flattened onto a background that contrasts with the content."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(img, dtype=np.float32)
        top = 65535.0 if mode != "F" else max(float(array.max()), 1e-12)
        notes.append(f"{'16-bit' if mode != 'F' else 'floating-point'} image scaled to 8 bits")
        return Image.fromarray(np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8), mode="L")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
        return img.convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if mode == "P":
        notes.append("palette image expanded to its colours")
    if not has_alpha:
        return img.convert("L" if mode in ("1", "L") else "RGB")
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:]
    visible = alpha[..., 0] > 0.5
    ink = rgba[..., :3][visible].mean() if visible.any() else 0.0
    background = 1.0 if ink < 0.5 else 0.0  # dark strokes on white, light strokes on black
    notes.append(f"transparency flattened onto {'white' if background else 'black'}")
    flat = rgba[..., :3] * alpha + background * (1.0 - alpha)
    return Image.fromarray((flat * 255.0).round().astype(np.uint8), mode="RGB")


def _border_mean(array: np.ndarray) -> float:
    """Mean of the outermost pixel ring of an [H, W] or [H, W, C] array: the background's brightness."""
    ring = np.concatenate([array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(), array[:, -1].ravel()])
    return float(ring.mean())


def _pad_square(img: Image.Image) -> Image.Image:
    """Pad the short side with the border colour, so resizing keeps the aspect ratio."""
    width, height = img.size
    if width == height:
        return img
    array = np.asarray(img)
    fill = tuple(int(round(v)) for v in np.median(
        np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]]).reshape(-1, len(img.getbands())), axis=0))
    side = max(width, height)
    return ImageOps.pad(img, (side, side), color=fill[0] if img.mode == "L" else fill)


def read_upload(path: str | Path, dataset: Dataset) -> Upload:
    """Read an uploaded image and convert it to ``dataset``'s channels and size.

    Applies the EXIF orientation, flattens transparency, converts palette, 16-bit and CMYK images, pads to a
    square with the border colour and resizes with a Lanczos filter. For single-channel datasets whose
    images are light strokes on a dark background (MNIST), a dark-on-light upload is inverted.
    """
    path = Path(path)
    img = _open_checked(path)
    side = DETAIL * max(dataset.image_size)
    pixels = img.width * img.height
    try:
        return _convert(img, path.name, side, dataset)
    finally:
        del img
        if pixels >= RETURN_MEMORY_PIXELS:
            return_freed_memory()


def _convert(img: Image.Image, name: str, side: int, dataset: Dataset) -> Upload:
    """``read_upload`` after the checks: decode, convert, report."""
    with img:
        img = _decode(img, name, side)
        original = img.size
        notes: list[str] = []
        if getattr(img, "n_frames", 1) > 1:
            notes.append(f"the file holds {img.n_frames} frames; only the first is used")
        orientation = img.getexif().get(0x0112, 1)
        if orientation not in (1, None):
            img = ImageOps.exif_transpose(img)
            notes.append(f"rotated upright as its EXIF orientation ({orientation}) says")
            original = img.size
        img = _to_plain_mode(_shrink(img, side), notes)
    img = img.convert("L" if dataset.channels == 1 else "RGB")
    height, width = dataset.image_size
    if original != (width, height):
        notes.append(f"resized from {original[0]}x{original[1]} to {width}x{height}"
                     + (" (padded to a square first)" if original[0] != original[1] else ""))
        img = _pad_square(img).resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(img, dtype=np.uint8)
    if dataset.channels == 1:
        dataset_dark = _border_mean(dataset.train_images[:256, 0].permute(1, 2, 0).numpy()) < 128
        if dataset_dark != (_border_mean(array) < 128):
            array = 255 - array
            notes.append("inverted, since the dataset draws light strokes on a dark background"
                         if dataset_dark else "inverted, since the dataset draws dark strokes on a light background")
    image = torch.from_numpy(array.reshape(height, width, dataset.channels).transpose(2, 0, 1).copy())
    return Upload(image, notes)
