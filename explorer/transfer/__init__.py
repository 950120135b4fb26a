"""Transfer: a classification run's backbone fine-tuned for semantic segmentation or object detection.

``python -m explorer.transfer --task segmentation|detection --backbone RUN_DIR`` (``explorer.transfer.loop``).
Modules: ``backbones`` (which layers of a classifier become the backbone), ``heads`` (torchvision's FCN, DeepLabV3
and FCOS around it), ``metrics`` (mIoU, pixel accuracy, COCO mAP through torchmetrics), ``config`` (the CLI),
``record`` (the run folder), ``checkpoints`` (loading a transfer run for prediction), ``study`` (backbones compared
over seeds).
"""
