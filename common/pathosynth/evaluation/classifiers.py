"""Train-on-synthetic, test-on-real: image classifiers trained with 5-fold cross-validation and scored on real data.

As in the paper (Sec. 4.5): each CNN is trained from scratch here (no downloaded ImageNet weights) with AdamW and
cross-entropy, 5-fold cross-validation on the training set, at most 50 epochs, early stopping when the validation loss
has not improved for ``patience`` epochs (the best epoch's weights are kept). Each fold's model is then scored on the
real held-out split; the report gives every fold, their mean and standard deviation, and the fold ensemble (mean
softmax). The training set is any list of labelled-image sources (MedMNIST npz or datalist JSON,
:func:`~pathosynth.data.medmnist.read_labelled_images`): synthetic only, real only or real + synthetic.

A fold whose checkpoint exists with the same settings is not retrained, so an interrupted run resumes at its fold.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.medmnist import read_labelled_images
from ..io.atomic import atomic_path, write_json
from ..metrics.classification import classification_scores
from ..seeding import derive_seed

logger = logging.getLogger(__name__)

__all__ = ["CLASSIFIERS", "build_classifier", "cross_validate", "evaluate_folds", "load_images", "stratified_folds"]


def _monai_nets():
    from monai.networks import nets

    return {
        "densenet121": lambda c, k: nets.DenseNet121(spatial_dims=2, in_channels=c, out_channels=k),
        "resnet18": lambda c, k: nets.resnet18(spatial_dims=2, n_input_channels=c, num_classes=k),
        "resnet50": lambda c, k: nets.resnet50(spatial_dims=2, n_input_channels=c, num_classes=k),
        "seresnet50": lambda c, k: nets.SEResNet50(spatial_dims=2, in_channels=c, num_classes=k),
    }


CLASSIFIERS = ("densenet121", "resnet18", "resnet50", "seresnet50")


def build_classifier(name: str, num_classes: int, in_channels: int = 1) -> torch.nn.Module:
    """A randomly initialised MONAI 2D classifier (the paper's VGG, AlexNet, MobileNetV2, GoogleNet are not in
    MONAI)."""
    nets = _monai_nets()
    if name not in nets:
        raise ValueError(f"unknown classifier {name!r}; choose from {sorted(nets)}")
    return nets[name](int(in_channels), int(num_classes))


def load_images(
    sources: Sequence[str | os.PathLike],
    split: str = "train",
    image_size: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) in [0, 1], labels (N,)) of all ``sources`` together, resized (bilinear) to
    ``image_size``."""
    if not sources:
        raise ValueError("no training sources given")
    parts = []
    for source in sources:
        images, labels = read_labelled_images(source, split)
        if num_classes is not None and labels.max() >= num_classes:
            raise ValueError(f"{source}: class labels {sorted(set(labels.tolist()))} outside [0, {num_classes})")
        images = torch.from_numpy(images)
        if image_size is not None and tuple(images.shape[-2:]) != tuple(image_size):
            images = F.interpolate(images, size=tuple(int(s) for s in image_size), mode="bilinear", align_corners=False)
        parts.append((images, torch.from_numpy(labels)))
    if len({tuple(p[0].shape[1:]) for p in parts}) != 1:
        raise ValueError(f"sources {list(map(str, sources))} differ in image shape; set image_size")
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def stratified_folds(labels: np.ndarray | torch.Tensor, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint validation index sets covering every sample once, each class dealt evenly over the folds."""
    labels = np.asarray(labels).reshape(-1)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        order = np.random.default_rng([int(seed), int(value)]).permutation(len(members))
        fold_of[members[order]] = np.arange(len(members)) % int(k)
    return [np.flatnonzero(fold_of == f) for f in range(int(k))]


@torch.no_grad()
def predict_probabilities(
    network: torch.nn.Module, images: torch.Tensor, batch_size: int = 256, device="cpu"
) -> torch.Tensor:
    network.eval()
    return torch.cat(
        [
            torch.softmax(network(images[i : i + batch_size].to(device)), 1).cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


def _epoch_loss(network, images, labels, batch_size, device, optimizer=None, generator=None) -> float:
    """Mean cross-entropy over one pass; trains when an optimizer is given (shuffled by ``generator``)."""
    network.train(optimizer is not None)
    order = torch.randperm(len(images), generator=generator) if optimizer is not None else torch.arange(len(images))
    total = 0.0
    with torch.set_grad_enabled(optimizer is not None):
        for start in range(0, len(images), batch_size):
            pick = order[start : start + batch_size]
            loss = F.cross_entropy(network(images[pick].to(device)), labels[pick].to(device))
            if optimizer is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            total += float(loss) * len(pick)
    return total / len(images)


def _train_fold(name, num_classes, train, val, settings, seed, device):
    torch.manual_seed(seed)
    network = build_classifier(name, num_classes, train[0].shape[1]).to(device)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=settings["learning_rate"], weight_decay=settings["weight_decay"]
    )
    generator = torch.Generator().manual_seed(seed)
    best, best_state, history, waited = math.inf, None, [], 0
    for epoch in range(settings["max_epochs"]):
        train_loss = _epoch_loss(network, *train, settings["batch_size"], device, optimizer, generator)
        val_loss = _epoch_loss(network, *val, settings["batch_size"], device)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < best:
            best, waited = val_loss, 0
            best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        else:
            waited += 1
            if waited >= settings["patience"]:
                break
    network.load_state_dict(best_state)
    val_scores = classification_scores(
        val[1].numpy(), predict_probabilities(network, val[0], device=device).numpy(), num_classes
    )
    return best_state, {
        "history": history,
        "best_val_loss": best,
        "val_scores": val_scores,
        "stopped_epoch": len(history),
        "best_epoch": min(history, key=lambda h: h["val_loss"])["epoch"],
    }


def cross_validate(
    sources: Sequence[str],
    classifier: str,
    num_classes: int,
    ckpt_dir: str | os.PathLike,
    run_name: str,
    folds: int = 5,
    max_epochs: int = 50,
    patience: int = 5,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-2,
    batch_size: int = 64,
    image_size: Sequence[int] | None = None,
    seed: int = 0,
    device="cpu",
    split: str = "train",
) -> list[Path]:
    """Train ``classifier`` on each of ``folds`` stratified folds of ``sources``; returns the fold checkpoints
    ``<ckpt_dir>/<run_name>_<classifier>_fold<k>.pt`` (weights + settings + history)."""
    images, labels = load_images(sources, split, image_size, num_classes)
    settings = {
        "classifier": classifier,
        "num_classes": int(num_classes),
        "sources": [str(s) for s in sources],
        "folds": int(folds),
        "max_epochs": int(max_epochs),
        "patience": int(patience),
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "split": split,
        "image_size": list(images.shape[-2:]),
        "num_images": len(labels),
        "class_counts": np.bincount(labels.numpy()).tolist(),
    }
    paths = []
    for fold, val_index in enumerate(stratified_folds(labels.numpy(), folds, seed)):
        path = Path(ckpt_dir) / f"{run_name}_{classifier}_fold{fold}.pt"
        paths.append(path)
        if path.exists() and torch.load(path, weights_only=True)["metadata"]["settings"] == settings:
            logger.info(f"{path.name}: finished earlier with the same settings, skipped")
            continue
        train_mask = np.ones(len(labels), bool)
        train_mask[val_index] = False
        train = (images[train_mask], labels[train_mask])
        val = (images[val_index], labels[val_index])
        state, report = _train_fold(
            classifier, num_classes, train, val, settings, derive_seed(seed, classifier, fold), device
        )
        logger.info(f"{path.name}: best val loss {report['best_val_loss']:.4f} at epoch {report['best_epoch']}")
        with atomic_path(path) as tmp:
            torch.save({"network": state, "metadata": {"settings": settings, "fold": fold, **report}}, tmp)
    return paths


def load_fold(path: str | os.PathLike, device="cpu") -> tuple[torch.nn.Module, dict]:
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    settings = checkpoint["metadata"]["settings"]
    first = next(v for k, v in checkpoint["network"].items() if v.ndim == 4)
    network = build_classifier(settings["classifier"], settings["num_classes"], first.shape[1])
    network.load_state_dict(checkpoint["network"])
    return network.to(device).eval(), checkpoint["metadata"]


def evaluate_folds(
    checkpoints: Sequence[str | os.PathLike],
    test_source: str,
    test_split: str = "test",
    report_path: str | os.PathLike | None = None,
    device="cpu",
) -> dict:
    """Scores of every fold model on the real held-out split, their mean/std and the fold ensemble (mean softmax)."""
    models = [load_fold(path, device) for path in checkpoints]
    settings = models[0][1]["settings"]
    images, labels = load_images([test_source], test_split, settings["image_size"], settings["num_classes"])
    probabilities = [predict_probabilities(network, images, device=device) for network, _ in models]
    per_fold = [classification_scores(labels.numpy(), p.numpy(), settings["num_classes"]) for p in probabilities]
    metrics = ("accuracy", "precision", "recall", "f1", "auc")
    report = {
        "classifier": settings["classifier"],
        "training_sources": settings["sources"],
        "test_source": str(test_source),
        "test_split": test_split,
        "num_test_images": len(labels),
        "training": settings,
        "folds": [
            {
                "checkpoint": str(c),
                "best_epoch": m["best_epoch"],
                "stopped_epoch": m["stopped_epoch"],
                "best_val_loss": m["best_val_loss"],  # on the fold's held-out training images: why a fold stopped
                **s,
            }
            for c, (_, m), s in zip(checkpoints, models, per_fold)
        ],
        "mean": {k: float(np.mean([s[k] for s in per_fold])) for k in metrics},
        # sample std over folds (NaN for one fold), as every other repeated-training spread in the project
        "std": {k: float(np.std([s[k] for s in per_fold], ddof=1)) if len(per_fold) > 1 else math.nan for k in metrics},
        "ensemble": classification_scores(
            labels.numpy(), torch.stack(probabilities).mean(0).numpy(), settings["num_classes"]
        ),
    }
    if report_path is not None:
        write_json(report_path, report)
    return report
