"""FQCDM Sec. 5 strategies on the downstream segmentation bundle: ACDC labels, MONAI UNet, the classic-augmentation
switch (Tab. 4), context-encoder pretraining on (synthetic) images and fine-tuning from its weights (Fig. 6)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.networks.nets import UNet

from conftest import BUNDLES, run_bundle
from pathosynth.bundle_configs import config_files
from pathosynth.data.acdc import ACDC_LABELS
from pathosynth.data.cases import load_cases, load_image_cases
from pathosynth.data.errors import DatasetError
from pathosynth.data.transforms import RandRectangleMaskd
from pathosynth.engines.checkpoint import ResumableCheckpoint, load_matching_weights
from pathosynth.io.datalists import export_datalist
from pathosynth.losses.context_encoder import MaskedMSELoss, prepare_masked_reconstruction_batch
from pathosynth.networks.segmenter import nnunet_dynunet
from pathosynth.options import as_flag

CONFIGS = BUNDLES / "downstream_segmentation" / "configs"
ACDC_UNET_SMOKE = ["acdc.json", "unet.json", "smoke.json"]
CLASSIC = {"RandAffined", "RandGaussianNoised", "RandScaleIntensityd", "RandAdjustContrastd", "RandFlipd"}


@pytest.fixture()
def acdc_lists(acdc_phantom_dir, tmp_path):
    """Datalists as the split tool writes them (three patients train, one test) and a synthetic-style datalist
    (entries {"image", "label", "source_image", "case_id", "provenance"}, as the FQCDM bundle writes)."""
    cases = load_cases(dataset_dir=str(acdc_phantom_dir), labels=ACDC_LABELS)
    train = [c for c in cases if c["patient"] != "patient004"]
    export_datalist([("train", train)], tmp_path / "train.json")
    export_datalist([("test", [c for c in cases if c["patient"] == "patient004"])], tmp_path / "test.json")
    synthetic = [
        {
            "image": c["image"],
            "label": c["label"],
            "source_image": c["image"],
            "case_id": f"{c['case_id']}_syn00",
            "provenance": "provenance/none.json",
        }
        for c in train[:2]
    ]
    (tmp_path / "synthetic.json").write_text(json.dumps({"training": synthetic}))
    return {name: str(tmp_path / f"{name}.json") for name in ("train", "test", "synthetic")}


def _log(proc) -> str:
    return proc.stdout + proc.stderr


# --- (a) ACDC + UNet -----------------------------------------------------------------------------------------------


def test_acdc_unet_run_scores_rv_myocardium_lv(acdc_lists, tmp_path):
    out = tmp_path / "seg"
    run_bundle(
        "run",
        "downstream_segmentation",
        ["train.json", *ACDC_UNET_SMOKE],
        {
            "train_datalists": json.dumps([acdc_lists["train"], acdc_lists["synthetic"]]),
            "test_datalist": acdc_lists["test"],
            "output_dir": str(out),
        },
    )
    scores = json.loads((out / "scores.json").read_text())
    assert scores["classes"] == ["RV", "myocardium", "LV"] and set(scores["summary"]) == {"RV", "myocardium", "LV"}
    assert scores["network"] == "UNet (MONAI, 2D)" and scores["augment"] is True
    assert [c["case_id"] for c in scores["cases"]] == ["test_patient004_frame01", "test_patient004_frame14"]
    saved = torch.load(out / "segmenter.pt", weights_only=True)
    assert saved["metadata"]["labels"] == ACDC_LABELS and saved["metadata"]["network"] == "UNet (MONAI, 2D)"
    assert (
        saved["network"]["model.2.1.conv.unit0.conv.weight"].shape[0] == 4
    )  # MONAI UNet's output layer, one map per label
    inference = (
        ConfigParser()
    )  # inference.json + the same overlays loads the checkpoint; without unet.json it is refused
    inference.read_config([str(f) for f in config_files(CONFIGS, ["inference.json", *ACDC_UNET_SMOKE])])
    inference.update({"ckpt_dir": str(out), "datalist": acdc_lists["test"]})
    assert isinstance(inference.get_parsed_content("network"), UNet)
    inference.read_config([str(f) for f in config_files(CONFIGS, ["inference.json", "acdc.json", "smoke.json"])])
    inference.update({"ckpt_dir": str(out), "datalist": acdc_lists["test"]})
    with pytest.raises(RuntimeError) as refused:
        inference.get_parsed_content("network")
    assert "network='UNet (MONAI, 2D)'" in repr(refused.value.__cause__) and "DynUNet" in repr(refused.value.__cause__)


def test_unet_overlay_derives_channels_and_keeps_one_loss():
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(CONFIGS, ["train.json", *ACDC_UNET_SMOKE])])
    network = parser.get_parsed_content("network_def")
    assert (
        isinstance(network, UNet)
        and list(network.channels) == [8, 16, 32, 32, 32]
        and list(network.strides) == [2, 2, 2, 2]
    )
    assert network.out_channels == 4 and network.num_res_units == 2
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(CONFIGS, ["train.json", "unet.json"])])
    assert parser.get_parsed_content("unet_channels") == [32, 64, 128, 256, 512]
    loss = parser.get_parsed_content("train#loss")
    logits, target = torch.randn(2, 4, 16, 16), torch.randint(0, 4, (2, 1, 16, 16))
    assert torch.allclose(loss(logits, target), loss.loss(logits, target))  # UNet's single output: plain DiceCE


# --- (b) the classic-augmentation switch ---------------------------------------------------------------------------


@pytest.mark.parametrize("augment", [True, "true", False, "false", "False"])
def test_augment_switch_drops_only_the_classic_augmentation(augment):
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(CONFIGS, ["train.json", "smoke.json"])])
    parser["augment"] = augment
    names = [type(t).__name__ for t in parser.get_parsed_content("train#augmentation").transforms]
    assert (
        names[:2] == ["RandCropByLabelClassesd", "SqueezeDimd"] and names[-1] == "SelectItemsd"
    )  # slices are still drawn
    assert (CLASSIC <= set(names)) is as_flag(augment) and (CLASSIC & set(names) == set()) is (not as_flag(augment))


def test_augment_flag_refuses_a_typo():
    assert as_flag("No") is False and as_flag(1) is True
    with pytest.raises(ValueError, match="augment must be true or false"):
        as_flag("flase", "augment")


# --- (c) the random rectangle mask ---------------------------------------------------------------------------------


def test_rectangle_mask_fills_inside_keeps_outside_and_is_seeded():
    image = torch.rand(1, 48, 40) + 1.0  # never equal to the fill value
    masker = RandRectangleMaskd("image", area_fraction=(0.1, 0.25), fill=0.0)
    masker.set_random_state(seed=5)
    first = [masker({"image": image}) for _ in range(50)]
    for out in first:
        inside = out["mask"][0].bool()
        assert out["mask"].shape == (1, 48, 40) and 0.1 <= inside.float().mean() <= 0.25
        assert (out["image"][0][inside] == 0.0).all() and torch.equal(out["image"][0][~inside], image[0][~inside])
        assert torch.equal(out["target"], image)
    masker.set_random_state(seed=5)
    assert all(torch.equal(masker({"image": image})["mask"], out["mask"]) for out in first)
    masker.set_random_state(seed=6)
    assert not all(torch.equal(masker({"image": image})["mask"], out["mask"]) for out in first)
    with pytest.raises(ValueError, match="area_fraction"):
        RandRectangleMaskd("image", area_fraction=(0.3, 0.2))


# --- (e) the masked loss -------------------------------------------------------------------------------------------


def test_masked_loss_ignores_errors_outside_the_mask():
    target = torch.randn(2, 1, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:8, 4:10] = 1
    wrong_outside = target + 5.0 * (1 - mask)
    assert MaskedMSELoss()(wrong_outside, target, mask) == 0
    wrong_inside = target + 3.0 * mask
    assert torch.isclose(MaskedMSELoss()(wrong_inside, target, mask), torch.tensor(9.0))
    pred = wrong_outside.clone().requires_grad_()
    MaskedMSELoss()(pred, {"target": target, "mask": mask}).backward()  # the form SupervisedTrainer passes
    assert (pred.grad[(1 - mask).bool()] == 0).all()
    image, targets = prepare_masked_reconstruction_batch({"image": target * (1 - mask), "target": target, "mask": mask})
    assert torch.equal(image, target * (1 - mask)) and set(targets) == {"target", "mask"}


# --- (d) pretraining, then fine-tuning from its weights ------------------------------------------------------------


def test_context_encoder_pretraining_then_fine_tuning(acdc_lists, tmp_path):
    pre = tmp_path / "pretrain"
    run_bundle(
        "training",
        "downstream_segmentation",
        ["pretrain_context_encoder.json", *ACDC_UNET_SMOKE],
        {"train_datalists": json.dumps([acdc_lists["synthetic"], acdc_lists["train"]]), "output_dir": str(pre)},
    )
    weights = torch.load(pre / "context_encoder.pt", weights_only=True)
    assert weights["metadata"]["network"] == "UNet (MONAI, 2D)" and (pre / "context_encoder_latest.pt").exists()
    assert weights["network"]["model.2.1.conv.unit0.conv.weight"].shape[0] == 1  # one reconstructed channel

    out = tmp_path / "finetune"
    proc = run_bundle(
        "run",
        "downstream_segmentation",
        ["train.json", *ACDC_UNET_SMOKE],
        {
            "train_datalists": json.dumps([acdc_lists["train"]]),
            "test_datalist": acdc_lists["test"],
            "output_dir": str(out),
            "init_weights": str(pre / "context_encoder.pt"),
            "augment": "false",
        },
    )
    log = _log(proc)
    assert (
        "loaded 57 of the network's 61 tensors; skipped 4" in log and "model.2.0.conv.weight" in log
    )  # only the output layer
    scores = json.loads((out / "scores.json").read_text())
    assert scores["augment"] is False and scores["init_weights"] == str(pre / "context_encoder.pt")
    assert torch.load(out / "segmenter.pt", weights_only=True)["metadata"]["init_weights"]["path"] == str(
        pre / "context_encoder.pt"
    )


def _save_weights(network, path):
    torch.save({"network": network.state_dict(), "metadata": {}}, path)


def test_fine_tuning_starts_from_every_pretrained_tensor_but_the_heads(tmp_path, caplog):
    """Default DynUNet: the pretext model (1 channel, no deep supervision) gives everything but the output block and
    the deep-supervision heads, which start fresh."""
    torch.manual_seed(0)
    pretrained = nnunet_dynunet(1, 1, [64, 64], base_filters=8, max_filters=32, deep_supervision=False)
    _save_weights(pretrained, tmp_path / "context_encoder.pt")
    segmenter = nnunet_dynunet(1, 4, [64, 64], base_filters=8, max_filters=32, deep_supervision=True)
    with caplog.at_level(logging.INFO, logger="pathosynth.engines.checkpoint"):
        loaded, skipped = load_matching_weights(segmenter, tmp_path / "context_encoder.pt")
    assert "output_block.conv.conv.weight" in skipped and any(k.startswith("deep_supervision_heads") for k in skipped)
    assert all(k.startswith("output_block") or "head" in k for k in skipped)  # output layers only
    source = pretrained.state_dict()
    for name, tensor in segmenter.state_dict().items():
        if name not in skipped:
            assert torch.equal(tensor, source[name]), name
    assert f"loaded {len(loaded)} of the network's {len(loaded) + len(skipped)} tensors" in caplog.text


def test_init_weights_errors_name_the_file_and_resume_wins(tmp_path):
    network = UNet(2, 1, 4, [4, 8, 8], [2, 2], num_res_units=1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    with pytest.raises(FileNotFoundError, match="missing_context_encoder.pt"):
        ResumableCheckpoint(
            tmp_path, "segmenter", network, optimizer, init_weights=tmp_path / "missing_context_encoder.pt"
        )
    with pytest.raises(FileNotFoundError, match="gone.pt"):
        load_matching_weights(network, tmp_path / "gone.pt")
    torch.save({"network": {"other.weight": torch.zeros(3)}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt: none of its 1 tensors matches"):
        load_matching_weights(network, tmp_path / "foreign.pt")

    init = UNet(2, 1, 1, [4, 8, 8], [2, 2], num_res_units=1)
    _save_weights(init, tmp_path / "init.pt")
    fresh = ResumableCheckpoint(tmp_path / "fresh", "segmenter", network, optimizer, init_weights=tmp_path / "init.pt")
    fresh.load(Engine(lambda engine, batch: None))
    assert torch.equal(
        network.state_dict()["model.0.conv.unit0.conv.weight"], init.state_dict()["model.0.conv.unit0.conv.weight"]
    )

    own = UNet(2, 1, 4, [4, 8, 8], [2, 2], num_res_units=1)  # a run's own latest state: resuming must not take the init
    torch.save(
        {
            "network": own.state_dict(),
            "optimizer": torch.optim.SGD(own.parameters(), lr=0.1).state_dict(),
            "epoch": 3,
            "iteration": 6,
        },
        tmp_path / "segmenter_latest.pt",
    )
    resumed = ResumableCheckpoint(tmp_path, "segmenter", network, optimizer, init_weights=tmp_path / "init.pt")
    engine = Engine(lambda engine, batch: None)
    resumed.load(engine)
    assert engine.state.epoch == 3 and all(torch.equal(v, own.state_dict()[k]) for k, v in network.state_dict().items())


def test_image_cases_ignore_labels_and_name_bad_images(acdc_lists, tmp_path):
    records = load_image_cases([acdc_lists["synthetic"], acdc_lists["train"]])
    assert len(records) == 2 + 6 and all("label" not in r for r in records)
    (tmp_path / "images.json").write_text(json.dumps({"training": [{"image": "nowhere.nii.gz"}]}))
    with pytest.raises(DatasetError, match="nowhere.nii.gz"):
        load_image_cases(str(tmp_path / "images.json"))
