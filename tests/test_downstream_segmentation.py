"""Downstream segmentation benchmark: nnU-Net planning rules, the deep-supervision loss, case-level splits,
scoring on the original voxel grid, and the bundle's train → score → resume contract."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from monai.transforms import CenterSpatialCropd, Compose, EnsureChannelFirstd, LoadImaged, SpatialPadd

from conftest import run_bundle
from pathosynth.data.cases import load_cases
from pathosynth.data.errors import DatasetError
from pathosynth.data.labels import EMIDEC_LABELS
from pathosynth.data.splits import split_by_case, write_split
from pathosynth.evaluation.segmentation import SegmentationScorer
from pathosynth.networks.segmenter import StackedDeepSupervisionLoss, nnunet_dynunet, plan_dynunet


def test_plan_halves_in_plane_to_the_minimum_feature_size_and_caps_features():
    plan = plan_dynunet([128, 96], base_filters=32)
    sizes = np.array([128, 96])
    for stride in plan["strides"]:
        sizes = sizes // np.array(stride)
    assert plan["strides"][0] == [1, 1]
    assert ((4 <= sizes) & (sizes < 8)).all()  # each axis halved while it still had >= 2 * 4 voxels
    assert plan["filters"] == [min(32 * 2**i, 512) for i in range(len(plan["strides"]))]
    assert plan["upsample_kernel_size"] == plan["strides"][1:]


def test_plan_keeps_thick_slices_until_in_plane_spacing_catches_up():
    """nnU-Net: an axis more than twice the finest spacing is neither pooled nor convolved across (kernel 1)."""
    plan = plan_dynunet([160, 160, 16], spacing=[1.5, 1.5, 10.0])
    assert plan["kernel_size"][0] == [3, 3, 1]
    assert plan["strides"][1] == [2, 2, 1] and plan["strides"][2] == [2, 2, 1]
    first_z_pool = next(i for i, s in enumerate(plan["strides"]) if s[2] == 2)
    in_plane_spacing = 1.5 * 2 ** sum(1 for s in plan["strides"][:first_z_pool] if s[0] == 2)
    assert in_plane_spacing * 2 >= 10.0  # z is pooled only once it is at most twice the in-plane spacing


def test_dynunet_trains_with_stacked_heads_and_predicts_one_map():
    network = nnunet_dynunet(1, 5, [64, 64], base_filters=8, max_filters=32)
    x = torch.randn(2, 1, 64, 64)
    network.train()
    heads = network(x)
    assert heads.shape[:3] == (2, 3, 5)  # main + 2 deep-supervision heads, upsampled to full size
    network.eval()
    assert network(x).shape == (2, 5, 64, 64)


def test_stacked_deep_supervision_loss_is_the_weighted_sum_of_head_losses():
    torch.manual_seed(0)
    base = DiceCELoss(to_onehot_y=True, softmax=True)
    heads = torch.randn(2, 3, 5, 16, 16)
    target = torch.randint(0, 5, (2, 1, 16, 16))
    expected = sum(w * base(heads[:, i], target) for i, w in enumerate([1.0, 0.5, 0.25]))
    assert torch.allclose(StackedDeepSupervisionLoss(base)(heads, target), expected)
    assert torch.allclose(StackedDeepSupervisionLoss(base)(heads[:, 0], target), base(heads[:, 0], target))


def _records(n_normal, n_path):
    return [{"case_id": f"Case_N{i:03d}", "group": "normal"} for i in range(n_normal)] + [
        {"case_id": f"Case_P{i:03d}", "group": "pathological"} for i in range(n_path)
    ]


def test_split_is_by_case_stratified_and_seeded():
    records = _records(28, 57)
    train, test = split_by_case(records, 0.25, seed=0)
    train_ids, test_ids = {r["case_id"] for r in train}, {r["case_id"] for r in test}
    assert not train_ids & test_ids and len(train_ids | test_ids) == 85
    assert sum(i.startswith("Case_N") for i in test_ids) == 7 and sum(i.startswith("Case_P") for i in test_ids) == 14
    assert [r["case_id"] for r in split_by_case(records, 0.25, seed=0)[1]] == sorted(test_ids)
    assert {r["case_id"] for r in split_by_case(records, 0.25, seed=1)[1]} != test_ids
    with pytest.raises(ValueError, match="test_fraction"):
        split_by_case(records, 1.0)


def test_write_split_datalists_partition_the_dataset(phantom_dir, tmp_path):
    paths = write_split(phantom_dir, tmp_path / "split", test_fraction=0.5, seed=3)
    read = {
        name: {r["case_id"].split("_", 1)[1] for r in load_cases(datalist=p, labels=EMIDEC_LABELS)}
        for name, p in paths.items()
    }
    assert read["train_pathological"].isdisjoint(read["test"]) and read["train_normal"].isdisjoint(read["test"])
    assert read["test_pathological"] <= read["test"]
    assert len(read["train_pathological"] | read["train_normal"] | read["test"]) == 6
    split = json.loads((tmp_path / "split" / "split.json").read_text())
    assert split["seed"] == 3 and sorted(split["train"] + split["test"]) == sorted(
        p.name for p in phantom_dir.iterdir() if p.is_dir()
    )


def test_load_cases_combines_datalists_and_names_the_bad_one(phantom_dir, tmp_path):
    paths = write_split(phantom_dir, tmp_path / "split", test_fraction=0.5)
    both = load_cases(datalist=[paths["train_pathological"], paths["train_normal"]], labels=EMIDEC_LABELS)
    assert len(both) == len(load_cases(datalist=paths["train_pathological"], labels=EMIDEC_LABELS)) + len(
        load_cases(datalist=paths["train_normal"], labels=EMIDEC_LABELS)
    )
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"training": [{"image": "missing.nii.gz", "label": "missing_label.nii.gz"}]}))
    with pytest.raises(DatasetError, match="missing"):
        load_cases(datalist=[paths["train_normal"], str(broken)], labels=EMIDEC_LABELS)


class IntensityOracle(torch.nn.Module):
    """Logits that make argmax return round(intensity): a perfect segmenter for images that *are* label maps."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0].round().long().clamp(0, 4), 5).movedim(-1, 1).float()


def _label_case(tmp_path, name="case"):
    label = np.zeros((40, 36, 3), np.int16)
    label[12:28, 10:26] = 2
    label[15:25, 13:23] = 1
    label[12:15, 10:18, 1] = 3
    label[12:14, 10:13, 1] = 4
    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    paths = {}
    for key, data in (("image", label.astype(np.float32)), ("label", label)):
        paths[key] = str(tmp_path / f"{name}_{key}.nii.gz")
        nib.save(nib.Nifti1Image(data, affine), paths[key])
    return {"case_id": name, **paths}, label


def test_scorer_maps_predictions_back_to_the_original_grid(tmp_path):
    """A perfect segmenter scores Dice 1 / HD95 0 through crop + pad + inversion; the saved prediction
    is the reference label voxel for voxel, and distances use the file's spacing."""
    record, label = _label_case(tmp_path)
    keys = ["image", "label"]
    preprocessing = Compose(
        [
            LoadImaged(keys, image_only=True),
            EnsureChannelFirstd(keys),
            CenterSpatialCropd(keys, [32, 32, -1]),
            SpatialPadd(keys, [48, 32, -1]),
        ]
    )
    scorer = SegmentationScorer(
        IntensityOracle(),
        [record],
        preprocessing,
        _slicewise,
        EMIDEC_LABELS,
        ["LV", "myocardium", "MI", "PMO"],
        tmp_path / "out",
        save_predictions=True,
        metadata={"seed": 5},
    )
    report = scorer.run()
    for cls in ("LV", "myocardium", "MI", "PMO"):
        assert report["cases"][0][cls]["dice"] == pytest.approx(1.0)
        assert report["cases"][0][cls]["hd95"] == pytest.approx(0.0)
    saved = np.asarray(nib.load(tmp_path / "out" / "predictions" / "case.nii.gz").dataobj)
    np.testing.assert_array_equal(saved, label)
    assert (
        report["seed"] == 5
        and json.loads((tmp_path / "out" / "scores.json").read_text())["summary"]["LV"]["dice"]["n"] == 1
    )

    class Exploding(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("a finished scoring must not run the network again")

    again = SegmentationScorer(
        Exploding(), [record], preprocessing, _slicewise, EMIDEC_LABELS, ["LV"], tmp_path / "out"
    ).run()
    assert again["summary"] == report["summary"]


def _slicewise(x, net):
    return torch.stack([net(x[..., k]) for k in range(x.shape[-1])], dim=-1)


def test_scorer_counts_what_the_crop_cuts_off_as_missed(tmp_path):
    """Foreground outside the network's field of view is predicted background on the original grid, not dropped."""
    record, label = _label_case(tmp_path)
    keys = ["image", "label"]
    preprocessing = Compose(
        [LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys), CenterSpatialCropd(keys, [12, 36, -1])]
    )
    report = SegmentationScorer(
        IntensityOracle(), [record], preprocessing, _slicewise, EMIDEC_LABELS, ["myocardium"], tmp_path / "out"
    ).run()
    visible = np.zeros_like(label, bool)
    visible[14:26] = True  # the centred 12 of 40 rows
    expected_recall = (label[visible] == 2).sum() / (label == 2).sum()
    assert expected_recall < 1 and report["cases"][0]["myocardium"]["recall"] == pytest.approx(expected_recall)
    assert report["cases"][0]["myocardium"]["dice"] < 1.0


def test_segmentation_bundle_trains_scores_and_resumes(phantom_dir, tmp_path):
    paths = write_split(phantom_dir, tmp_path / "split", test_fraction=0.5)
    overrides = {
        "train_datalists": json.dumps([paths["train_pathological"], paths["train_normal"]]),
        "test_datalist": paths["test"],
        "output_dir": str(tmp_path / "seg"),
        "seed": 3,
    }
    run_bundle("run", "downstream_segmentation", ["train.json", "smoke.json"], overrides)
    scores = json.loads((tmp_path / "seg" / "scores.json").read_text())
    assert scores["seed"] == 3 and [c["case_id"] for c in scores["cases"]] == [
        r["case_id"] for r in load_cases(datalist=paths["test"], labels=EMIDEC_LABELS)
    ]
    assert {d["path"] for d in scores["train_datalists"]} == {paths["train_pathological"], paths["train_normal"]}
    assert all(len(d["sha256"]) == 64 for d in scores["train_datalists"] + scores["test_datalist"])
    assert set(scores["summary"]) == {"LV", "myocardium", "MI", "PMO"}
    proc = run_bundle("run", "downstream_segmentation", ["train.json", "smoke.json"], overrides)
    log = proc.stderr + proc.stdout
    assert "resumed segmenter" in log and "at epoch 2" in log  # the finished training is not started over
    assert "with lr_scheduler" in log  # the polynomial learning-rate decay continues where it stopped
    latest = torch.load(tmp_path / "seg" / "segmenter_latest.pt", weights_only=True)
    assert latest["extra"]["lr_scheduler"]["last_epoch"] == 4  # one scheduler step per iteration
    assert "not scoring again" in log
    assert json.loads((tmp_path / "seg" / "scores.json").read_text()) == scores

    # inference.json segments images without labels the same way the scorer does, and resumes per case
    run_bundle(
        "inference",
        "downstream_segmentation",
        ["inference.json", "smoke.json"],
        {"datalist": paths["test"], "ckpt_dir": str(tmp_path / "seg"), "output_dir": str(tmp_path / "pred")},
    )
    run_bundle(
        "evaluating",
        "downstream_segmentation",
        ["train.json", "smoke.json"],
        {
            **overrides,
            "ckpt_dir": str(tmp_path / "seg"),
            "output_dir": str(tmp_path / "scored"),
            "save_predictions": "true",
        },
    )
    cases = load_cases(datalist=paths["test"], labels=EMIDEC_LABELS)
    for case in cases:
        written = nib.load(tmp_path / "pred" / "predictions" / f"{case['case_id']}.nii.gz")
        source = nib.load(case["image"])
        assert (
            written.shape == source.shape
            and np.allclose(written.affine, source.affine)
            and written.get_data_dtype() == np.uint8
        )
        scored = np.asarray(nib.load(tmp_path / "scored" / "predictions" / f"{case['case_id']}.nii.gz").dataobj)
        np.testing.assert_array_equal(np.asarray(written.dataobj), scored)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "pred" / "predictions").iterdir()}
    run_bundle(
        "inference",
        "downstream_segmentation",
        ["inference.json", "smoke.json"],
        {"datalist": paths["test"], "ckpt_dir": str(tmp_path / "seg"), "output_dir": str(tmp_path / "pred")},
    )
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "pred" / "predictions").iterdir()} == stamps


def test_predictor_refuses_missing_images_before_any_work(tmp_path):
    from pathosynth.data.layouts import read_datalist
    from pathosynth.evaluation.segmentation import SegmentationPredictor

    datalist = tmp_path / "images.json"
    datalist.write_text(json.dumps({"training": [{"image": "gone.nii.gz"}]}))
    cases = read_datalist(datalist, require_label=False)
    assert "label" not in cases[0]  # an image without a label: the key is absent (records hold no None values)
    with pytest.raises(DatasetError, match="gone.nii.gz"):
        SegmentationPredictor(IntensityOracle(), cases, lambda d: d, _slicewise, tmp_path / "out")
    with pytest.raises(DatasetError, match="image and label"):
        read_datalist(datalist)
