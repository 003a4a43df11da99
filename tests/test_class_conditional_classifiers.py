"""Train-on-synthetic, test-on-real classifiers (class_conditional_ddpm train_classifier.json / evaluate.json):
stratified k folds cover every image once with the classes dealt evenly, early stopping keeps the best epoch, a finished
fold is not retrained, a classifier learns a separable toy task and is scored on the held-out split, and explanations
are per-pixel maps of the image's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathosynth.data.medmnist import write_medmnist_npz
from pathosynth.evaluation.classifiers import build_classifier, cross_validate, evaluate_folds, stratified_folds
from pathosynth.evaluation.explanations import explain


def test_stratified_folds_cover_every_image_once_with_balanced_classes():
    labels = np.repeat([0, 1, 2], [23, 10, 7])
    folds = stratified_folds(labels, k=5, seed=1)
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(len(labels)))
    for c, n in ((0, 23), (1, 10), (2, 7)):
        counts = [int((labels[f] == c).sum()) for f in folds]
        assert max(counts) - min(counts) <= 1 and sum(counts) == n
    assert not all(np.array_equal(a, b) for a, b in zip(folds, stratified_folds(labels, k=5, seed=2)))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Dark (class 0) vs bright-centred (class 1) 16x16 images: separable, so a working pipeline must learn them."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = np.repeat([0, 1], n)
        images = rng.normal(40, 10, (2 * n, 16, 16))
        images[labels == 1, 4:12, 4:12] += 150
        return np.clip(images, 0, 255).astype(np.uint8), labels

    path = tmp_path_factory.mktemp("toy") / "toy.npz"
    write_medmnist_npz(path, {"train": split(16), "test": split(10)})
    return path


def test_cross_validation_learns_a_separable_task_keeps_the_best_epoch_and_resumes(toy, tmp_path):
    settings = dict(folds=2, max_epochs=4, patience=2, batch_size=8, learning_rate=3e-3, seed=0)
    paths = cross_validate([toy], "resnet18", 2, tmp_path, "real", **settings)
    for path in paths:
        meta = torch.load(path, weights_only=True)["metadata"]
        history = meta["history"]
        assert meta["best_epoch"] == min(history, key=lambda h: h["val_loss"])["epoch"] and len(history) <= 4
        assert meta["settings"]["class_counts"] == [16, 16]
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert cross_validate([toy], "resnet18", 2, tmp_path, "real", **settings) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps  # finished folds are not retrained
    report = evaluate_folds(paths, toy, "test", tmp_path / "report.json")
    assert report["num_test_images"] == 20 and len(report["folds"]) == 2
    saved = [torch.load(p, weights_only=True)["metadata"] for p in paths]  # a report says why each fold stopped
    assert [(f["best_epoch"], f["best_val_loss"]) for f in report["folds"]] == [
        (m["best_epoch"], m["best_val_loss"]) for m in saved
    ]
    assert report["ensemble"]["accuracy"] >= 0.9 and report["mean"]["auc"] >= 0.9, report["ensemble"]
    for metric in ("accuracy", "auc"):  # mean ± sample std over folds, as every repeated-training spread we report
        per_fold = [fold[metric] for fold in report["folds"]]
        assert report["std"][metric] == pytest.approx(np.std(per_fold, ddof=1))
    assert (tmp_path / "report.json").is_file()
    with pytest.raises(ValueError, match="outside"):
        cross_validate([toy], "resnet18", 1, tmp_path, "bad", **settings)


@pytest.mark.parametrize("method", ["lime", "occlusion"])
def test_explanations_are_maps_of_the_image_size(method):
    if method == "lime":
        pytest.importorskip("lime", reason="LIME explanations need the optional 'lime' package")
    torch.manual_seed(0)
    network = build_classifier("resnet18", 2).eval()
    image = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    predicted, weights = explain(network, image, method, num_samples=30, n_segments=30)
    assert predicted in (0, 1) and weights.shape == (16, 16) and np.isfinite(weights).all()
    assert len(np.unique(weights)) > 2  # several regions get their own weight, even on a noisy image
