"""Class-balanced synthetic datasets (class_conditional_ddpm inference): exactly N images of every requested class with
its label, written with the output contract -- a sample depends on its seed only (not the batch size), reruns skip
finished samples, a rerun with another sampler is refused, and the MedMNIST-style npz matches the datalist."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler
from PIL import Image

from pathosynth.data.medmnist import read_labelled_images, read_medmnist_split
from pathosynth.diffusion.guided_ddim import GuidedDDIMSampler
from pathosynth.diffusion.latent import PIXEL_STATS, DiffusionSpace
from pathosynth.synthesis.class_balanced import ClassBalancedSynthesis

CLASSES = ["normal", "pneumonia"]


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    unet = DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=[8, 16],
        attention_levels=[False, False],
        num_res_blocks=1,
        norm_num_groups=8,
        num_class_embeds=3,
    )
    for module in unet.modules():  # MONAI zero-initialises block outputs; random weights make samples non-trivial
        if module is not unet and callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    return unet.eval()


def _synthesis(network, out, num_per_class, batch_size=4, guidance_scale=2.0, seed=0):
    sampler = GuidedDDIMSampler(
        DDPMScheduler(num_train_timesteps=20),
        num_inference_steps=4,
        guidance_scale=guidance_scale,
        condition_key="class_labels",
    )
    return ClassBalancedSynthesis(
        network,
        sampler,
        CLASSES,
        num_per_class,
        (1, 8, 8),
        DiffusionSpace(None, **{"shift": PIXEL_STATS["latent_shift"], "scale": PIXEL_STATS["latent_scale"]}),
        out,
        seed=seed,
        batch_size=batch_size,
        bundle={"name": "class_conditional_ddpm", "version": "0.1.0"},
        preview_per_class=2,
        progress=False,
    )


def _pixels(folder, entry):
    return np.asarray(Image.open(folder / entry["image"])).astype(int)


def test_dataset_has_exactly_n_images_per_class_with_their_labels(network, tmp_path):
    datalist = _synthesis(network, tmp_path, 3).run()
    entries = datalist["training"]
    assert sorted((e["class_name"], e["label"]) for e in entries) == [("normal", 0)] * 3 + [("pneumonia", 1)] * 3
    assert all(e["source_image"] == "" and (tmp_path / e["provenance"]).is_file() for e in entries)
    images, labels = read_medmnist_split(tmp_path / "synthetic.npz", "train")
    assert images.shape == (6, 8, 8) and images.dtype == np.uint8 and np.bincount(labels).tolist() == [3, 3]
    from_datalist, datalist_labels = read_labelled_images(tmp_path / "datalist.json")
    assert np.allclose(from_datalist[:, 0], images / 255.0, atol=1e-6) and np.array_equal(datalist_labels, labels)
    record = json.loads((tmp_path / entries[0]["provenance"]).read_text())
    assert (
        record["synthesis"]["sampler"]["guidance_scale"] == 2.0 and record["bundle"]["name"] == "class_conditional_ddpm"
    )
    assert (tmp_path / "preview.png").is_file()
    only = _synthesis(network, tmp_path / "only", {"pneumonia": 2}).run()["training"]
    assert [(e["class_name"], e["label"]) for e in only] == [("pneumonia", 1)] * 2
    with pytest.raises(ValueError, match="covid"):
        _synthesis(network, tmp_path / "bad", {"covid": 2})


def test_a_sample_depends_on_its_seed_not_on_the_batch_size(network, tmp_path):
    one = _synthesis(network, tmp_path / "one", 3, batch_size=1).run()["training"]
    six = _synthesis(network, tmp_path / "six", 3, batch_size=6).run()["training"]
    for a, b in zip(one, six):
        assert (
            a["case_id"] == b["case_id"]
            and np.abs(_pixels(tmp_path / "one", a) - _pixels(tmp_path / "six", b)).max() <= 1
        )
    other = _synthesis(network, tmp_path / "other", 3, seed=1).run()["training"]
    assert np.abs(_pixels(tmp_path / "one", one[0]) - _pixels(tmp_path / "other", other[0])).max() > 10


def test_rerun_skips_finished_samples_and_refuses_another_sampler(network, tmp_path):
    _synthesis(network, tmp_path, 2).run()
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "images").iterdir()}
    entries = _synthesis(network, tmp_path, 3).run()["training"]  # N grows: only the new samples are drawn
    assert len(entries) == 6
    assert all((tmp_path / "images" / name).stat().st_mtime_ns == stamp for name, stamp in stamps.items())
    assert not list(tmp_path.rglob(".*"))  # no temporary file left behind
    with pytest.raises(ValueError, match="made with other settings.*guidance_scale: 2.0 in the folder, 5.0 now"):
        _synthesis(network, tmp_path, 3, guidance_scale=5.0).run()
