"""FQCDM stage 2: label-map-conditioned DDPM in the VQ autoencoder's latent space (Sec. 3.3, Eq. 4, 8-10, Alg. 1).

The autoencoder is made here (the config's VQVAE, fitted for a few hundred L1 + quantisation steps on phantom
slices), not by the stage-1 trainer. Bundle runs go through `python -m monai.bundle run` with smoke.json plus
the stage-2 sizes below; the paper's claims are checked in process on a model trained for seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from conftest import BUNDLES, bundle_configs, run_bundle

BUNDLE = "label_guided_latent_diffusion"
CONFIGS = BUNDLES / BUNDLE / "configs"
FOV, SIZE = [48, 48], [32, 32]
# stage-2 smoke sizes, on top of smoke.json (whose fov is widened so that the phantom heart spans several latent pixels)
TINY = {
    "fov_size": FOV,
    "image_size": SIZE,
    "unet_channels": [16, 32],
    "unet_attention_levels": [False, False],
    "unet_num_res_blocks": 1,
    "unet_num_head_channels": 8,
    "unet_norm_num_groups": 8,
    "unet_spade_channels": 16,
    "num_train_timesteps": 10,
    "latent_stats_volumes": 4,
}
INFER = {"slice_batch_size": 8, "preview_cases": 2}


def _arrays(path):
    return np.asanyarray(nib.load(str(path)).dataobj)


def _parser(config: str, dataset, ckpt, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(bundle_configs(BUNDLE, config, "smoke.json"))
    parser.read_meta(str(CONFIGS / "metadata.json"))
    parser.update(
        {"dataset_dir": str(dataset), "ckpt_dir": str(ckpt), "output_dir": str(Path(ckpt) / "out"), **TINY, **overrides}
    )
    parser.parse()
    return parser


@pytest.fixture(scope="module")
def acdc(acdc_phantom_dir) -> Path:
    """The shared ACDC-layout phantom (4 patients, 8 labelled 96x96x6 frames): bright blood pools, dark myocardium."""
    return acdc_phantom_dir


@pytest.fixture(scope="module")
def slices(acdc):
    """All phantom slices on the model grid, as training preprocesses them: (N, 1, 32, 32) images in [0, 1], labels."""
    from pathosynth.data.acdc import ACDC_LABELS
    from pathosynth.data.cases import load_cases
    from pathosynth.io.nifti import read_nifti
    from pathosynth.synthesis.slice_grid import SliceGrid

    images, labels = [], []
    for case in load_cases(acdc, labels=ACDC_LABELS):
        image, label = read_nifti(case["image"])[0], read_nifti(case["label"])[0]
        grid = SliceGrid(image.shape[:2], FOV, SIZE)
        images.append(grid.to_model((image - image.min()) / (image.max() - image.min()), "area"))
        labels.append(grid.to_model(label, "nearest"))
    return torch.cat(images), torch.cat(labels)


@pytest.fixture(scope="module")
def autoencoder_ckpt(acdc, slices, tmp_path_factory) -> Path:
    """ckpt_dir with autoencoder.pt in the stage-1 format: the config's VQVAE fitted with L1 + quantisation loss."""
    ckpt = tmp_path_factory.mktemp("ckpt")
    parser = _parser("train_diffusion.json", acdc, ckpt)
    torch.manual_seed(0)
    autoencoder = parser.get_parsed_content("autoencoder_def")
    images = slices[0]
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=2e-3)
    for _ in range(400):
        batch = images[torch.randint(0, len(images), (16,))]
        reconstruction, quantization_loss = autoencoder(batch)
        loss = (reconstruction - batch).abs().mean() + quantization_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    meta = {k: parser.get_parsed_content(k) for k in ("image_size", "fov_size", "num_embeddings", "embedding_dim")}
    torch.save({"network": autoencoder.state_dict(), "metadata": meta}, ckpt / "autoencoder.pt")
    return ckpt


def _components(acdc, ckpt, stats=None):
    """(space, network, scheduler) from train_diffusion.json + smoke.json, the network freshly initialised."""
    from pathosynth.diffusion.latent import DiffusionSpace, estimate_latent_stats

    parser = _parser("train_diffusion.json", acdc, ckpt)
    autoencoder = parser.get_parsed_content("autoencoder")
    stats = stats or estimate_latent_stats(autoencoder, parser.get_parsed_content("train#stats_dataset"))
    space = DiffusionSpace(autoencoder, stats["latent_shift"], stats["latent_scale"])
    torch.manual_seed(0)
    return space, parser.get_parsed_content("network_def"), parser.get_parsed_content("scheduler")


def _fit(space, network, scheduler, slices, steps: int, batch_size: int = 16, lr: float = 1e-3):
    """Train the denoiser on (image, label) slices with Eq. 10 (a fresh MONAI denoiser outputs exactly 0: its last
    convolution is zero-initialised, so even the wiring tests take a few steps first)."""
    from monai.inferers import DiffusionInferer

    from pathosynth.data.acdc import ACDC_LABELS
    from pathosynth.diffusion.label_guided import LabelConditionedPrepareBatch

    prepare = LabelConditionedPrepareBatch(scheduler.num_train_timesteps, space, ACDC_LABELS)
    inferer = DiffusionInferer(scheduler)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.05)
    images, labels = slices
    torch.manual_seed(0)
    network.train()
    for _ in range(steps):
        index = torch.randint(0, len(images), (batch_size,))
        x0, target, args, kwargs = prepare({"image": images[index], "label": labels[index]})
        loss = torch.nn.functional.mse_loss(inferer(x0, network, *args, **kwargs), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return network.eval()


def _synthesizer(space, network, scheduler, **kwargs):
    from pathosynth.data.acdc import ACDC_LABELS
    from pathosynth.diffusion.label_guided import LabelGuidedSampler
    from pathosynth.synthesis.label_guided import LabelGuidedSynthesizer

    return LabelGuidedSynthesizer(
        space, ACDC_LABELS, FOV, SIZE, network=network.eval(), sampler=LabelGuidedSampler(scheduler), **kwargs
    )


def _label(acdc, case="patient001/patient001_frame01_gt.nii.gz"):
    return _arrays(acdc / case)


# ---------------------------------------------------------------------------------------------------- the maths


def test_sampler_step_is_the_ddpm_posterior_step():
    """Algorithm 1's reverse step, with our per-sample noise, equals MONAI's DDPMScheduler.step with the same noise."""
    from monai.networks.schedulers import DDPMScheduler

    from pathosynth.diffusion.label_guided import LabelGuidedSampler

    for clip in (False, True):
        scheduler = DDPMScheduler(num_train_timesteps=20, schedule="cosine", clip_sample=clip)
        x, eps = torch.randn(2, 3, 4, 4) * 2, torch.randn(2, 3, 4, 4)
        for t in (19, 7, 1, 0):
            expected, _ = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(5))
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
            assert torch.allclose(LabelGuidedSampler(scheduler).chain.step(eps, x, t, noise), expected, atol=1e-6)


def test_bundle_sampler_keeps_latent_samples_in_the_declared_range(acdc, autoencoder_ckpt):
    """T = 100 cosine ends in beta = 0.999, which amplifies the first x0 error ~30x. The bundle's scheduler clips x0 to
    ``clip_sample_range``, so even a denoiser that is wrong everywhere yields samples inside that range, while the
    unclipped sampler diverges far beyond it."""
    from pathosynth.diffusion.label_guided import LabelGuidedSampler

    scheduler = _parser("inference.json", acdc, autoencoder_ckpt).get_parsed_content("scheduler")
    low, high = scheduler.clip_sample_values
    assert scheduler.clip_sample and (float(low), float(high)) == (-4.0, 4.0)

    def wrong(x, timesteps, seg):  # a denoiser whose noise estimate is off by a unit-variance error
        return torch.randn(x.shape, generator=torch.Generator().manual_seed(int(timesteps[0])))

    seg, generators = torch.zeros(2, 4, 8, 8), [torch.Generator().manual_seed(k) for k in range(2)]
    clipped = LabelGuidedSampler(scheduler)(wrong, seg, (3, 8, 8), generators)
    assert clipped.min() >= low and clipped.max() <= high
    scheduler.clip_sample = False
    generators = [torch.Generator().manual_seed(k) for k in range(2)]
    assert LabelGuidedSampler(scheduler)(wrong, seg, (3, 8, 8), generators).abs().max() > 5 * high


def test_bundle_sampler_respaces_and_switches_to_ddim_by_config(acdc, autoencoder_ckpt):
    """Issue 18: ``num_inference_steps`` and ``ddim_eta`` choose fewer steps and DDIM; the default is all T DDPM
    steps."""
    default = _parser("inference.json", acdc, autoencoder_ckpt).get_parsed_content("sampler")
    assert default.settings()["num_inference_steps"] == 10 and default.settings()["step"] == "ddpm"
    parser = _parser("inference.json", acdc, autoencoder_ckpt, num_inference_steps=4, ddim_eta=0.0)
    sampler = parser.get_parsed_content("sampler")
    assert sampler.settings()["num_inference_steps"] == 4 and sampler.settings()["step"] == "ddim"
    seen = []

    def network(x, timesteps, seg):
        seen.append(int(timesteps[0]))
        return 0.5 * x

    sampler(network, torch.zeros(1, 4, 8, 8), (3, 8, 8), [torch.Generator().manual_seed(0)])
    assert seen == [9, 6, 3, 0] and sampler.last_network_evaluations == 4


def test_slice_grid_matches_training_preprocessing_and_inverts_it(acdc, autoencoder_ckpt):
    """Synthesis brings labels to the model grid exactly as the training transforms do, and returns to the label
    grid."""
    from pathosynth.synthesis.slice_grid import SliceGrid

    parser = _parser("train_diffusion.json", acdc, autoencoder_ckpt)
    case = parser.get_parsed_content("train#cases")[0]
    volume = parser.get_parsed_content("train#stats_dataset")[0]
    image, label = _arrays(case["image"]), _arrays(case["label"])
    grid = SliceGrid(label.shape[:2], FOV, SIZE)
    assert torch.equal(
        grid.to_model(label, "nearest")[:, 0], torch.as_tensor(volume["label"][0]).permute(2, 0, 1).float()
    )
    unit = (image - image.min()) / (image.max() - image.min())
    assert torch.allclose(
        grid.to_model(unit, "area")[:, 0], torch.as_tensor(volume["image"][0]).permute(2, 0, 1), atol=1e-6
    )
    same = SliceGrid(label.shape[:2], FOV, FOV)  # no resize: the way back is exact inside the field of view
    back = same.from_model(same.to_model(label, "nearest"), fill=-1)
    inside = back >= 0
    assert inside.sum() == 48 * 48 * label.shape[2] and np.array_equal(back[inside], label[inside])


def test_denoiser_output_depends_on_the_label_map(acdc, autoencoder_ckpt, slices):
    """Same F_t and t, different label map -> different noise prediction (the label enters through SPADE)."""
    from monai.inferers import DiffusionInferer

    from pathosynth.data.acdc import ACDC_LABELS
    from pathosynth.diffusion.label_guided import LabelConditionedPrepareBatch

    space, network, scheduler = _components(acdc, autoencoder_ckpt)
    _fit(space, network, scheduler, slices, steps=3)
    prepare = LabelConditionedPrepareBatch(10, space, ACDC_LABELS)
    images, labels = slices[0][:4], slices[1][:4]

    def predict(label):
        torch.manual_seed(1)  # same noise and timesteps every call
        x0, target, args, kwargs = prepare({"image": images, "label": label})
        with torch.no_grad():
            return DiffusionInferer(scheduler)(x0, network.eval(), *args, **kwargs), kwargs

    reference, kwargs = predict(labels)
    assert kwargs["seg"].shape == (4, len(ACDC_LABELS), 8, 8) and torch.equal(kwargs["seg"].sum(1), torch.ones(4, 8, 8))
    assert torch.equal(predict(labels)[0], reference)
    assert not torch.allclose(predict(torch.roll(labels, 8, dims=-1))[0], reference, atol=1e-4)
    assert not torch.allclose(predict(torch.zeros_like(labels))[0], reference, atol=1e-4)


def test_decoded_samples_are_built_only_from_codebook_vectors(acdc, autoencoder_ckpt, slices):
    """Eq. 4: every vector the decoder receives is a row of the codebook, exactly; the DDPM's own output is not."""
    space, network, scheduler = _components(acdc, autoencoder_ckpt)
    _fit(space, network, scheduler, slices, steps=3)
    autoencoder = space.autoencoder
    codebook = autoencoder.quantizer.quantizer.embedding.weight.detach()
    seen, generated = [], []
    hooks = [
        autoencoder.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach())),
        autoencoder.quantizer.quantizer.register_forward_pre_hook(
            lambda module, args: generated.append(args[0].detach())
        ),
    ]
    try:
        _synthesizer(space, network, scheduler).synthesize(_label(acdc), seed=3)
    finally:
        for hook in hooks:
            hook.remove()
    vectors = torch.cat([s.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1]) for s in seen])
    assert len(vectors) == 6 * 8 * 8
    assert (vectors[:, None, :] == codebook[None]).all(-1).any(-1).all(), "a decoder input is not a codebook row"
    raw = torch.cat([g.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1]) for g in generated])  # F', un-normalised
    assert len(raw) == len(vectors) and not (raw[:, None, :] == codebook[None]).all(-1).any(-1).any()


def test_without_quantisation_the_decoder_receives_the_generated_features(acdc, autoencoder_ckpt, slices):
    """The Tab. 5 ablation switch (``inference_no_quantisation.json``): the codebook is never consulted and the decoder
    gets F' itself, so the images differ from the quantised path for the same seed."""
    space, network, scheduler = _components(acdc, autoencoder_ckpt)
    _fit(space, network, scheduler, slices, steps=3)
    autoencoder = space.autoencoder
    seen, looked_up = [], []
    hooks = [
        autoencoder.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach())),
        autoencoder.quantizer.quantizer.register_forward_pre_hook(lambda module, args: looked_up.append(1)),
    ]
    try:
        space.quantize_features = False
        plain = _synthesizer(space, network, scheduler).synthesize(_label(acdc), seed=3)
    finally:
        space.quantize_features = True
        for hook in hooks:
            hook.remove()
    assert seen and not looked_up
    codebook = autoencoder.quantizer.quantizer.embedding.weight.detach()
    vectors = torch.cat([s.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1]) for s in seen])
    assert not (vectors[:, None, :] == codebook[None]).all(-1).any(-1).any()
    quantised = _synthesizer(space, network, scheduler).synthesize(_label(acdc), seed=3)
    assert not np.allclose(plain.image, quantised.image)


def test_sampling_is_reproducible_per_seed_whatever_the_batching(acdc, autoencoder_ckpt, slices):
    space, network, scheduler = _components(acdc, autoencoder_ckpt)
    _fit(space, network, scheduler, slices, steps=3)
    label = _label(acdc)
    first = _synthesizer(space, network, scheduler, slice_batch_size=6).synthesize(label, seed=5)
    again = _synthesizer(space, network, scheduler, slice_batch_size=6).synthesize(label, seed=5)
    sliced = _synthesizer(space, network, scheduler, slice_batch_size=1).synthesize(label, seed=5)
    other = _synthesizer(space, network, scheduler, slice_batch_size=6).synthesize(label, seed=6)
    assert np.array_equal(first.image, again.image)
    assert np.allclose(first.image, sliced.image, atol=1e-4)
    assert not np.allclose(first.image, other.image, atol=1e-3)
    assert first.image.shape == label.shape and np.array_equal(first.label, label)


def test_label_guided_samples_put_the_blood_pool_and_myocardium_where_the_label_says(acdc, autoencoder_ckpt, slices):
    """After ~300 training steps (seconds), synthetic images are bright in the LV cavity and dark in the myocardium
    of the *given* label map: for labels as in the data and for labels moved by 8 px (a heart position never seen in
    training), in every one of 8 samples, with a mean margin of many standard errors."""
    from monai.networks.schedulers import DDPMScheduler

    from pathosynth.data.acdc import ACDC_LABELS
    from pathosynth.data.cases import load_cases

    space, network, _ = _components(acdc, autoencoder_ckpt)
    scheduler = DDPMScheduler(num_train_timesteps=50, schedule="cosine", clip_sample=False)
    _fit(space, network, scheduler, slices, steps=300)
    synthesizer = _synthesizer(space, network, scheduler, slice_batch_size=6)
    for shift in (0, 8):
        margins = []
        for index, case in enumerate(load_cases(acdc, labels=ACDC_LABELS)[:4]):
            label = np.roll(_arrays(case["label"]), shift, axis=0)
            for sample in range(2):
                image = synthesizer.synthesize(label, seed=100 * index + sample).image
                margins.append(
                    image[label == ACDC_LABELS["LV"]].mean() - image[label == ACDC_LABELS["myocardium"]].mean()
                )
        margins = np.array(margins)
        assert (margins > 0).all(), (
            f"shift {shift}: LV not brighter than myocardium in some samples: {margins.round(3)}"
        )
        assert margins.mean() > 4 * margins.std(ddof=1) / np.sqrt(len(margins)), margins.round(3)


# ---------------------------------------------------------------------------------------------------- the bundle


def _train(dataset, ckpt, overlays=(), **overrides):
    return run_bundle(
        "training",
        BUNDLE,
        ["train_diffusion.json", *overlays, "smoke.json"],
        {"dataset_dir": dataset, "ckpt_dir": ckpt, "output_dir": Path(ckpt) / "logs", **TINY, **overrides},
    )


def _infer(dataset, ckpt, out, overlays=(), **overrides):
    return run_bundle(
        "inference",
        BUNDLE,
        ["inference.json", *overlays, "smoke.json"],
        {"dataset_dir": dataset, "ckpt_dir": ckpt, "output_dir": out, **TINY, **INFER, **overrides},
    )


def check_paired_dataset(out: Path, dataset: Path, space: str, n_checkpoints: int) -> list[dict]:
    """Output contract: paired image/label NIfTI on the label file's grid, datalist entries, provenance, preview."""
    entries = json.loads((out / "datalist.json").read_text())["training"]
    assert entries and (out / "preview.png").stat().st_size > 1000
    for entry in entries:
        assert all(entry[key] for key in ("image", "label", "source_image"))
        record = json.loads((out / entry["provenance"]).read_text())
        assert record["bundle"]["version"] and len(record["checkpoints"]) == n_checkpoints
        assert all(len(h) == 64 for h in record["checkpoints"].values())
        assert record["synthesis"]["space"] == space and "seed" in record
        source_label = nib.load(record["source_label"])
        assert Path(record["source_label"]).is_relative_to(dataset.resolve())
        for key in ("image", "label"):
            written = nib.load(str(out / entry[key]))
            assert written.shape == source_label.shape and np.allclose(written.affine, source_label.affine)
        assert np.array_equal(_arrays(out / entry["label"]), np.asanyarray(source_label.dataobj)), "the label is kept"
        image = _arrays(out / entry["image"])
        assert image.dtype == _arrays(entry["source_image"]).dtype and np.isfinite(image).all() and image.std() > 0
    return entries


@pytest.fixture(scope="module")
def trained(acdc, autoencoder_ckpt):
    """Latent diffusion trained for 4 steps, then resumed to 6: (ckpt_dir, metadata after 4 steps, resumed run)."""
    _train(acdc, autoencoder_ckpt)
    first = torch.load(autoencoder_ckpt / "label_diffusion.pt", weights_only=True)["metadata"]
    resumed = _train(acdc, autoencoder_ckpt, max_steps=6)
    return autoencoder_ckpt, first, resumed


def test_training_resumes_and_stores_the_latent_normalisation(trained):
    ckpt, first, resumed = trained
    meta = torch.load(ckpt / "label_diffusion.pt", weights_only=True)["metadata"]
    assert first["iteration"] == 4 and meta["iteration"] == 6
    assert "resumed label_diffusion" in resumed.stdout + resumed.stderr
    assert meta["latent_scale"] == first["latent_scale"] > 0 and meta["latent_shift"] == first["latent_shift"]
    assert meta["space"] == "latent" and meta["labels"] == {"background": 0, "RV": 1, "myocardium": 2, "LV": 3}
    assert list((ckpt / "logs" / "tensorboard" / "label_diffusion").glob("events.out.tfevents.*"))


def test_inference_writes_paired_cases_and_skips_finished_ones(acdc, trained, tmp_path):
    ckpt = trained[0]
    out = tmp_path / "out"
    _infer(acdc, ckpt, out, max_cases=2)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    proc = _infer(acdc, ckpt, out)
    assert "2 already finished" in proc.stdout + proc.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert len(after) == 4 and all(after[name] == mtime for name, mtime in first.items())
    entries = check_paired_dataset(out, acdc, "latent", n_checkpoints=2)
    record = json.loads((out / entries[0]["provenance"]).read_text())
    assert record["synthesis"]["network_evaluations"] == 6 * 10 and record["synthesis"]["latent_scale"] > 0


def test_pixel_space_baseline_trains_and_synthesises(acdc, tmp_path):
    ckpt = tmp_path / "ckpt"
    _train(acdc, ckpt, overlays=["train_diffusion_pixel.json"], max_steps=2)
    assert torch.load(ckpt / "pixel_label_diffusion.pt", weights_only=True)["metadata"]["space"] == "pixel"
    out = tmp_path / "out"
    _infer(acdc, ckpt, out, overlays=["inference_pixel.json"], max_cases=2)
    check_paired_dataset(out, acdc, "pixel", n_checkpoints=1)


def test_vq_reconstruction_baseline_reproduces_the_source_on_its_grid(acdc, autoencoder_ckpt, tmp_path):
    """The autoencoder alone: encode, quantise, decode the real image; it lines up with the source voxel for voxel."""
    out = tmp_path / "out"
    _infer(acdc, autoencoder_ckpt, out, overlays=["inference_reconstruction.json"], max_cases=2)
    for entry in check_paired_dataset(out, acdc, "latent", n_checkpoints=1):
        source, reconstruction = _arrays(entry["source_image"]), _arrays(out / entry["image"])
        fov = (slice(24, 72), slice(24, 72))  # the centred 48x48 field of view of the 96x96 slices

        def correlation(dy, dx):
            moved = np.roll(source, (dy, dx), axis=(0, 1))
            return np.corrcoef(moved[fov].ravel(), reconstruction[fov].ravel())[0, 1]

        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
        scores = [correlation(dy, dx) for dy, dx in shifts]
        assert shifts[int(np.argmax(scores))] == (0, 0), "the reconstruction is best aligned with an unshifted source"
        assert correlation(0, 0) > 0.7


def test_latent_statistics_are_read_beside_a_flat_model_pt(tmp_path):
    """A packed archive's models/model.pt is a flat state dict with its metadata in models/model_metadata.json: the
    latent normalisation is read from there (it used to look inside the .pt only, so archive inference failed); a
    checkpoint without the statistics is an error naming the file."""
    import json

    from pathosynth.diffusion.latent import DiffusionSpace
    from pathosynth.errors import UserInputError

    torch.save({"weight": torch.zeros(2)}, tmp_path / "model.pt")
    (tmp_path / "model_metadata.json").write_text(json.dumps({"latent_shift": 0.25, "latent_scale": 2.0}))
    space = DiffusionSpace(None, stats_checkpoint=tmp_path / "model.pt")
    assert (space.shift, space.scale) == (0.25, 2.0)
    torch.save({"network": {"weight": torch.zeros(2)}, "metadata": {}}, tmp_path / "other.pt")
    with pytest.raises(UserInputError, match=f"checkpoint {tmp_path / 'other.pt'} holds no latent_shift"):
        _ = DiffusionSpace(None, stats_checkpoint=tmp_path / "other.pt").shift
