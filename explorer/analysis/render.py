"""Pixels for the browser: images upscaled without blur, the patch grid, outlined swapped patches, CAM overlays.

Digits are 8x8 or 28x28 pixels: a browser stretching them smooths the patch borders away. Every image is
therefore upscaled here by an integer factor (each pixel becomes a ``scale`` x ``scale`` block), and the
grid and outlines are drawn at the upscaled resolution, exactly on patch borders.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

__all__ = ["GRID_COLOUR", "OUTLINE_COLOUR", "cam_overlay", "display_scale", "render_image", "to_rgb"]

GRID_COLOUR = (120, 120, 120)  # thin lines between patches
OUTLINE_COLOUR = (255, 190, 0)  # amber frame around each exchanged patch
DISPLAY_SIDE = 280  # pixels: the long side of an image on screen


def display_scale(height: int, width: int, side: int = DISPLAY_SIDE) -> int:
    """The integer upscaling factor that brings the long side to about ``side`` pixels (at least 1)."""
    return max(1, math.ceil(side / max(height, width)))


def to_rgb(image: Tensor | np.ndarray) -> np.ndarray:
    """A uint8 image [C, H, W] (C = 1 or 3) as a uint8 array [H, W, 3]."""
    array = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"expected an image [C, H, W] with C = 1 or 3; got shape {array.shape}")
    return np.ascontiguousarray(np.repeat(array, 3 // array.shape[0], axis=0).transpose(1, 2, 0)).astype(np.uint8)


def _frame(rgb: np.ndarray, top: int, left: int, size: int, thickness: int, colour: tuple[int, int, int]) -> None:
    """Paint a square frame of ``thickness`` pixels just inside the square (top, left, size) in place."""
    rgb[top:top + thickness, left:left + size] = colour
    rgb[top + size - thickness:top + size, left:left + size] = colour
    rgb[top:top + size, left:left + thickness] = colour
    rgb[top:top + size, left + size - thickness:left + size] = colour


def render_image(image: Tensor | np.ndarray, patch_size: int | None = None, mask: Tensor | np.ndarray | None = None,
                 scale: int | None = None) -> np.ndarray:
    """Upscale a uint8 image [C, H, W] (or an RGB array [H, W, 3]) by pixel repetition, then draw on it.

    With ``patch_size``: a one-pixel grid line on every inner patch border. With ``mask`` (bool
    [H / patch_size, W / patch_size], True = exchanged): an outline on the border of every exchanged patch,
    about a twelfth of a patch thick. Returns uint8 [H * scale, W * scale, 3].
    """
    is_rgb = isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
    rgb = image if is_rgb else to_rgb(image)
    h, w = rgb.shape[:2]
    scale = scale or display_scale(h, w)
    out = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    if patch_size is None:
        return out
    if h % patch_size or w % patch_size:
        raise ValueError(f"patch_size {patch_size} does not divide the image size {h}x{w}")
    step = patch_size * scale
    out[step::step, :] = GRID_COLOUR  # the row just after each inner border
    out[:, step::step] = GRID_COLOUR
    if mask is not None:
        mask = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
        thickness = max(2, step // 12)
        for row, col in zip(*np.nonzero(mask), strict=True):
            _frame(out, int(row) * step, int(col) * step, step, thickness, OUTLINE_COLOUR)
    return out


def cam_overlay(image: Tensor | np.ndarray, cam: np.ndarray, opacity: float) -> np.ndarray:
    """A CAM [H, W] in [0, 1] as a jet heat map over the uint8 image [C, H, W]; uint8 [H, W, 3], not upscaled.

    ``opacity`` 0 shows only the image, 1 only the heat map.
    """
    from explorer.analysis.cam import grad_cam_module

    show_cam_on_image = grad_cam_module("pytorch_grad_cam.utils.image").show_cam_on_image
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"overlay opacity must be in [0, 1]; got {opacity}")
    rgb = to_rgb(image).astype(np.float32) / 255.0
    heat = show_cam_on_image(rgb, np.asarray(cam, dtype=np.float32), use_rgb=True, image_weight=1.0 - opacity)
    return heat.astype(np.uint8)

