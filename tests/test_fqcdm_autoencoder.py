"""FQCDM stage 1 (train_autoencoder.json): VQ autoencoder vs the dual-branch discriminator, Eq. 7 with adaptive lambda.

Bundle runs go through `python -m monai.bundle run` on the ACDC-layout phantom (smoke scale); the claims about
the optimisation itself are checked in process on a few phantom slices.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from monai.bundle import ConfigParser

from conftest import BUNDLES, bundle_configs, run_bundle

BUNDLE = "label_guided_latent_diffusion"
CONFIGS = BUNDLES / BUNDLE / "configs"
WORKFLOW_IDS = {"imports", "initialize", "run", "finalize", "training"}
ADVERSARIAL_TERMS = ("adv_weight", "g_adv_loss", "d_loss")


@pytest.fixture(scope="module")
def acdc_phantom(tmp_path_factory) -> Path:
    """Two ACDC-layout phantom patients (4 labelled frames, 96x96x6)."""
    from pathosynth.data.phantom import generate_acdc_like_dataset

    out = tmp_path_factory.mktemp("acdc")
    generate_acdc_like_dataset(out, n_patients=2, seed=3, in_plane=96, n_slices=6)
    return out


def _train(dataset, ckpt, **overrides):
    return run_bundle(
        "training",
        BUNDLE,
        ["train_autoencoder.json", "smoke.json"],
        {"dataset_dir": dataset, "ckpt_dir": ckpt, "output_dir": Path(ckpt) / "logs", **overrides},
    )


def _parser(dataset, ckpt) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(bundle_configs(BUNDLE, "train_autoencoder.json", "smoke.json"))
    parser.read_meta(str(CONFIGS / "metadata.json"))
    parser.update({"dataset_dir": str(dataset), "ckpt_dir": str(ckpt), "output_dir": str(Path(ckpt) / "logs")})
    parser.parse()
    return parser


def _logged_terms(stdout: str, epoch_length: int = 2) -> dict[int, set[str]]:
    """Global iteration -> names of the terms StatsHandler logged for it."""
    terms = {}
    for epoch, it, rest in re.findall(r"Epoch: (\d+)/\d+, Iter: (\d+)/\d+ -- (.*)", stdout):
        terms[(int(epoch) - 1) * epoch_length + int(it)] = set(re.findall(r"(\w+): [-\d.]+", rest))
    return terms


@pytest.fixture(scope="module")
def trained(acdc_phantom, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("ckpt")
    return ckpt, _train(acdc_phantom, ckpt)


def test_config_instantiates_on_acdc_data(acdc_phantom, tmp_path):
    """Every component of train_autoencoder.json + smoke.json builds on ACDC-layout data (the bundle contract)."""
    parser = _parser(acdc_phantom, tmp_path)
    for key in parser.config:
        if key not in WORKFLOW_IDS:
            parser.get_parsed_content(key)
    assert parser.get_parsed_content("perceptual_loss") is None, "no local weights given: the perceptual term is off"


def test_training_writes_autoencoder_checkpoints_and_logs(trained, acdc_phantom):
    ckpt, _ = trained
    weights = torch.load(ckpt / "autoencoder.pt", weights_only=True)
    meta = weights["metadata"]
    assert meta["image_size"] == [32, 32] and meta["num_embeddings"] == 32 and meta["embedding_dim"] == 3
    assert meta["iteration"] == 4 and meta["bundle"]["version"]
    latest = torch.load(ckpt / "autoencoder_latest.pt", weights_only=True)
    assert {"discriminator", "d_optimizer", "lr_scheduler", "d_lr_scheduler"} <= set(latest["extra"])
    assert not any(k.startswith(("patch_branch", "edge_branch")) for k in weights["network"]), (
        "inference weights: autoencoder only"
    )
    autoencoder = _parser(acdc_phantom, ckpt).get_parsed_content("autoencoder_def")
    autoencoder.load_state_dict(weights["network"])  # the shared autoencoder_def rebuilds the trained network
    assert list((ckpt / "logs" / "tensorboard" / "autoencoder").glob("events.out.tfevents.*"))


def test_adversarial_term_is_absent_before_start_step_and_lambda_is_logged_after(trained):
    _, proc = trained
    terms = _logged_terms(proc.stdout)
    assert sorted(terms) == [1, 2, 3, 4]
    for iteration in (1, 2):  # smoke: adversarial_start_step = 2
        assert {"rec_loss", "quantization_loss"} <= terms[iteration]
        assert not terms[iteration] & set(ADVERSARIAL_TERMS), terms[iteration]
    for iteration in (3, 4):
        assert set(ADVERSARIAL_TERMS) <= terms[iteration], terms[iteration]


def test_rerun_resumes_autoencoder_and_discriminator(trained, acdc_phantom, tmp_path):
    from pathosynth.engines.checkpoint import ResumableCheckpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained[0], ckpt)
    saved = torch.load(ckpt / "autoencoder_latest.pt", weights_only=True)["extra"]

    # In process: a fresh discriminator and its optimizer get exactly the saved state back.
    parser = _parser(acdc_phantom, ckpt)
    discriminator, d_optimizer = parser.get_parsed_content("discriminator"), parser.get_parsed_content("d_optimizer")
    fresh = {k: v.clone() for k, v in discriminator.state_dict().items()}
    handler = ResumableCheckpoint(
        ckpt,
        "autoencoder",
        parser.get_parsed_content("autoencoder"),
        parser.get_parsed_content("optimizer"),
        extra={"discriminator": discriminator, "d_optimizer": d_optimizer},
    )
    engine = SimpleNamespace(state=SimpleNamespace(epoch=0, iteration=0))
    handler.load(engine)
    assert engine.state.iteration == 4
    loaded = discriminator.state_dict()
    assert all(torch.equal(loaded[k], saved["discriminator"][k]) for k in saved["discriminator"])
    assert any(not torch.equal(loaded[k], fresh[k]) for k in fresh), "the saved discriminator was trained"
    assert (
        d_optimizer.state_dict()["state"]
        and d_optimizer.state_dict()["state"][0]["step"] == saved["d_optimizer"]["state"][0]["step"]
    )

    # Through the bundle: the rerun continues at iteration 5 with the GAN on, up to the new max_steps.
    proc = _train(acdc_phantom, ckpt, max_steps=6)
    assert re.search(r"resumed autoencoder from .* iteration 4 \(with discriminator, d_optimizer", proc.stdout), (
        proc.stdout[-3000:]
    )
    terms = _logged_terms(proc.stdout)
    assert sorted(terms) == [5, 6] and set(ADVERSARIAL_TERMS) <= terms[5]
    assert torch.load(ckpt / "autoencoder.pt", weights_only=True)["metadata"]["iteration"] == 6


def test_broken_dataset_is_named_before_training(acdc_phantom, tmp_path):
    data = tmp_path / "acdc"
    shutil.copytree(acdc_phantom, data)
    broken = sorted(data.glob("patient002/patient002_frame01.nii.gz"))[0]
    broken.write_bytes(b"not a nifti")
    with pytest.raises(AssertionError) as err:
        _train(data, tmp_path / "ckpt")
    message = str(err.value)
    assert str(broken.resolve()) in message and "not a readable NIfTI" in message
    assert "Epoch: 1" not in message and not (tmp_path / "ckpt" / "autoencoder_latest.pt").exists()


def test_perceptual_loss_needs_local_weights_and_never_downloads(tmp_path):
    from pathosynth.engines.adversarial import local_perceptual_loss

    assert local_perceptual_loss(None) is None and local_perceptual_loss("") is None
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        local_perceptual_loss(tmp_path / "missing_resnet50.pt")
    with pytest.raises(ValueError, match="download"):
        local_perceptual_loss(tmp_path / "w.pt", network_type="alex")


def test_short_training_lowers_reconstruction_loss_and_trains_both_networks(acdc_phantom, tmp_path):
    """Eq. 7 in process on 4 phantom slices: L_rec falls; D moves only once the GAN is on, and separates real from
    fake."""
    from ignite.engine import Events

    from pathosynth.engines.adversarial import AdversarialVQTrainer, vq_loss_terms

    parser = _parser(acdc_phantom, tmp_path)
    torch.manual_seed(0)
    samples = parser.get_parsed_content("train#dataset")[0]  # slices_per_volume=2 slices of one volume
    images = torch.cat([s["image"].as_tensor()[None] for s in samples + parser.get_parsed_content("train#dataset")[1]])
    autoencoder, discriminator = parser.get_parsed_content("autoencoder"), parser.get_parsed_content("discriminator")
    d_before = {k: v.clone() for k, v in discriminator.state_dict().items() if v.is_floating_point()}
    trainer = AdversarialVQTrainer(
        "cpu",
        max_epochs=1,
        epoch_length=120,
        train_data_loader=[{"image": images}],
        network=autoencoder,
        optimizer=torch.optim.AdamW(autoencoder.parameters(), lr=2e-3, weight_decay=0.05),
        discriminator=discriminator,
        d_optimizer=torch.optim.AdamW(discriminator.parameters(), lr=2e-3),
        adversarial_start_step=40,
        perceptual_loss=torch.nn.functional.mse_loss,
        perceptual_weight=0.1,
    )
    history, d_at_start = [], {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        history.append(vq_loss_terms(engine.state.output))
        if engine.state.iteration == 40:  # last step without GAN: D untouched so far
            d_at_start.update({k: v.clone() for k, v in discriminator.state_dict().items() if k in d_before})

    trainer.run()
    rec = [h["rec_loss"] for h in history]
    assert sum(rec[-5:]) < 0.8 * sum(rec[:5]), rec
    assert all("perceptual_loss" in h for h in history)
    assert all(torch.equal(d_at_start[k], d_before[k]) for k in d_before), "no discriminator step before the GAN starts"
    assert any(not torch.equal(discriminator.state_dict()[k], d_before[k]) for k in d_before)
    assert all(h["adv_weight"] > 0 for h in history[40:])
    late = history[-5:]
    assert sum(h["d_real"] - h["d_fake"] for h in late) > 0, (
        "the trained discriminator scores real above reconstructions"
    )


@pytest.mark.slow
def test_two_processes_train_the_autoencoder_with_ddp(acdc_phantom, tmp_path):
    """torchrun, 2 CPU processes (gloo): both networks DDP-wrapped, one checkpoint written by rank 0, and the
    discriminator's state travels with the resume file."""
    overrides = {"dataset_dir": acdc_phantom, "ckpt_dir": tmp_path / "ckpt", "output_dir": tmp_path / "logs"}
    configs = ["train_autoencoder.json", "multi_gpu_train_autoencoder.json", "smoke.json"]
    run_bundle("training", BUNDLE, configs, overrides, nproc=2)
    latest = torch.load(tmp_path / "ckpt" / "autoencoder_latest.pt", weights_only=True)
    assert latest["iteration"] == 4 and "discriminator" in latest["extra"]
    assert not any(k.startswith("module.") for k in latest["network"])  # saved unwrapped: loads without DDP
