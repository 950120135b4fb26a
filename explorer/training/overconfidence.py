"""Where a model's confidence goes wrong: the numbers behind "why is IPS over-confident here?".

IPS measured a lower ECE than CE yet a higher NLL on every dataset we tried: its few errors are confident. These
functions measure that from a finished run folder (a run folder is a checkpoint folder), on the split the run
reported (the test split, or the held-out 20 % of a ``--holdout`` run):

- ``error_confidence``: the mean max-softmax probability of the wrong predictions (how sure the errors are), and
  ``correct_confidence`` of the right ones;
- ``error_nll_share``: the share of the total NLL that the wrong predictions carry;
- ``kd_ce_ratio``: the final epoch's weighted KD term over its cross-entropy (how much of the loss distils);
- ``teacher_confidence`` / ``teacher_correct``: the final epoch's mean true-class probability of the teacher view
  and how often the teacher predicted the true class, where the run logged them (IPS and its variants).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from explorer.checkpoints import load_checkpoint
from explorer.data import Dataset, load_dataset
from explorer.evaluate import predict_logits
from explorer.training.runfolder import CONFIG, final_epoch, read_json

__all__ = ["HOLDOUT_SUFFIX", "confidence_profile", "split_of"]

HOLDOUT_SUFFIX = "[holdout]"


def split_of(dataset_name: str) -> Dataset:
    """The dataset a run reported on: ``NAME[holdout]`` is NAME's held-out 20 % as its test split."""
    if dataset_name.endswith(HOLDOUT_SUFFIX):
        return load_dataset(dataset_name[: -len(HOLDOUT_SUFFIX)]).holdout()
    return load_dataset(dataset_name)


@torch.no_grad()
def confidence_profile(run_dir: Path) -> dict[str, Any]:
    """The confidence numbers of a finished run (see the module docstring); ValueError when it is not finished."""
    run_dir = Path(run_dir)
    last = final_epoch(run_dir)
    if last is None:
        raise ValueError(f"{run_dir} is not a finished run")
    checkpoint = load_checkpoint(run_dir, "cpu")
    dataset = split_of(checkpoint.card["dataset"])
    logits = predict_logits(checkpoint.model, dataset, dataset.test_images)
    labels = dataset.test_labels
    nll = F.cross_entropy(logits, labels, reduction="none").double()
    confidence = logits.softmax(dim=1).max(dim=1).values.double()
    wrong = logits.argmax(dim=1) != labels
    kd_weight = float(read_json(run_dir / CONFIG).get("kd_weight", 1.0))
    profile = {
        "errors": int(wrong.sum()), "n": len(labels),
        "error_confidence": float(confidence[wrong].mean()) if wrong.any() else None,
        "correct_confidence": float(confidence[~wrong].mean()) if (~wrong).any() else None,
        "error_nll_share": float(nll[wrong].sum() / nll.sum()) if nll.sum() > 0 else None,
        "nll": float(nll.mean()),
        "kd_ce_ratio": kd_weight * last["kd"] / last["ce"] if last.get("ce") else None,
    }
    for key in ("teacher_confidence", "teacher_correct"):
        profile[key] = last.get(key)
    return profile
