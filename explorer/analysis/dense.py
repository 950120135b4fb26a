"""Pictures and payloads of the dense tasks (Gradio-free): a scene with its class mask or its boxes drawn over it.

Masks are drawn as one colour per class (``PALETTE``, the class index modulo its length) blended over the scene, the
background left as it is; boxes as rectangles in their class's colour with the class name and, for predictions, the
score. Payloads give the data behind a picture as the API returns it: a mask as class indices (0 background, k + 1
object class k), boxes as ``[x0, y0, x1, y1]`` pixels with their class and score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["PALETTE", "boxes_payload", "mask_payload", "render_boxes", "render_mask", "render_scene"]

PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128),
                    (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0),
                    (255, 215, 180), (0, 0, 128), (128, 128, 128)], dtype=np.uint8)
MASK_OPACITY = 0.65


def render_scene(image: Tensor, scale: int) -> np.ndarray:
    """A uint8 scene [C, H, W] (1 or 3 channels) as an RGB picture [H * scale, W * scale, 3], pixels kept sharp."""
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    return np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy().repeat(scale, 0).repeat(scale, 1))


def render_mask(image: Tensor, mask: Tensor, scale: int) -> np.ndarray:
    """The scene with every non-background pixel of ``mask`` [H, W] (0 background, k + 1 class k) in class k's
    colour; ignored pixels (255) stay as they are."""
    picture = render_scene(image, scale).astype(np.float32)
    classes = mask.cpu().numpy().astype(np.int64).repeat(scale, 0).repeat(scale, 1)
    shown = (classes > 0) & (classes != 255)
    colours = PALETTE[(classes[shown] - 1) % len(PALETTE)].astype(np.float32)
    picture[shown] = (1 - MASK_OPACITY) * picture[shown] + MASK_OPACITY * colours
    return picture.round().astype(np.uint8)


def render_boxes(image: Tensor, boxes: Tensor, labels: Tensor, class_names: Sequence[str], scale: int,
                 scores: Tensor | None = None) -> np.ndarray:
    """The scene with each box in its class's colour, named by its class (and score, for predictions)."""
    picture = Image.fromarray(render_scene(image, scale))
    draw = ImageDraw.Draw(picture)
    for i, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist(), strict=True)):
        colour = tuple(int(c) for c in PALETTE[label % len(PALETTE)])
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)
        text = class_names[label] + ("" if scores is None else f" {float(scores[i]):.2f}")
        draw.text((x0 + 2, max(0, y0 - 11)), text, fill=colour)
    return np.asarray(picture)


def mask_payload(mask: Tensor) -> list[list[int]]:
    """A mask [H, W] as rows of class indices (0 background, k + 1 object class k)."""
    return mask.cpu().long().tolist()


def boxes_payload(boxes: Tensor, labels: Tensor, class_names: Sequence[str],
                  scores: Tensor | None = None) -> list[dict[str, Any]]:
    """Boxes as ``{"box": [x0, y0, x1, y1], "class": index, "class_name": name, "score": s}`` (no score for truth)."""
    out = []
    for i, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist(), strict=True)):
        entry = {"box": [round(v, 2) for v in box], "class": int(label), "class_name": class_names[label]}
        if scores is not None:
            entry["score"] = round(float(scores[i]), 4)
        out.append(entry)
    return out
