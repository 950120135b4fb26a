"""The dense tasks' metrics, computed by torchmetrics (detection through its pycocotools backend).

- Segmentation: mean IoU over the classes (background included) that occur in the ground truth or the prediction
  of the evaluated images (``MulticlassJaccardIndex``, macro: a class absent from both is left out, not counted as
  0 or 1), and pixel accuracy (``MulticlassAccuracy``, micro). Pixels marked ``scenes.IGNORE`` count in neither.
- Detection: COCO's mAP, the mean over classes and IoU thresholds 0.50:0.05:0.95 of the 101-point interpolated
  average precision (``map``), and the same at IoU 0.5 (``map_50``) and 0.75 (``map_75``), up to 100 detections
  per image, as ``pycocotools.COCOeval`` computes them (``MeanAveragePrecision``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from explorer.data.scenes import IGNORE

__all__ = ["DETECTION_METRICS", "SEGMENTATION_METRICS", "detection_metrics", "segmentation_metrics"]

SEGMENTATION_METRICS = ("miou", "pixel_accuracy")
DETECTION_METRICS = ("map", "map_50", "map_75")


def segmentation_metrics(predicted: Tensor, truth: Tensor, num_classes: int) -> dict[str, float]:
    """mIoU and pixel accuracy of predicted masks [N, H, W] against true ones; ``num_classes`` counts the
    background (class 0) too."""
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    predicted, truth = predicted.long().cpu(), truth.long().cpu()
    iou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=IGNORE)
    accuracy = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE)
    return {"miou": float(iou(predicted, truth)), "pixel_accuracy": float(accuracy(predicted, truth))}


def detection_metrics(predictions: Sequence[dict[str, Tensor]],
                      targets: Sequence[dict[str, Tensor]]) -> dict[str, float]:
    """COCO mAP@[.5:.95], mAP@.5 and mAP@.75 of per-image predictions (``boxes`` xyxy, ``scores``, ``labels``)
    against per-image targets (``boxes``, ``labels``). With no object in any target the metrics are -1, COCO's
    "undefined"."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.update([{k: v.detach().cpu() for k, v in p.items()} for p in predictions],
                  [{k: v.detach().cpu() for k, v in t.items()} for t in targets])
    result = metric.compute()
    return {name: float(result[name]) for name in DETECTION_METRICS}

