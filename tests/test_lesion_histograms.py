"""Texture control by lesion intensity histograms (issue 22): the condition computed from a crop's lesion voxels, the
network's condition embedding and its null embedding, classifier-free guidance, the clusters file, and which
histogram each ``texture`` mode asks for (recorded in provenance); CT windowing keeps the background bit-exact."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from pathosynth.data.histograms import (
    LesionHistogramd,
    clusters_path,
    histogram_clusters,
    mean_bin,
    perturb_histograms,
    read_histogram_clusters,
    volume_histograms,
    write_histogram_clusters,
)
from pathosynth.data.intensity import UnitIntensityd
from pathosynth.diffusion.conditioned import ConditionedDenoiser
from pathosynth.diffusion.inpainting import LesionInpaintingSampler
from pathosynth.errors import MissingInputError, UserInputError
from pathosynth.networks.pseudo3d_unet import Pseudo3DDiffusionUNet
from pathosynth.synthesis.histogram_texture import HistogramTexture
from pathosynth.synthesis.lesion_texture import LesionTextureSynthesizer, TextureModel

LABELS = {"background": 0, "MI": 3, "PMO": 4}
CHANNELS = [["MI"], ["PMO"]]


def test_histogram_of_a_crops_lesion_voxels():
    """Per channel, the fraction of its lesion voxels in each bin of the normalised intensity; values beyond the
    range count in the end bins; a channel without voxels is all zeros; channels are concatenated."""
    image = torch.full((2, 4, 4, 2), 0.9)  # two repeated texture channels, as training feeds them
    image[:, 0, :3, 0] = torch.tensor([-1.5, -0.9, 0.1])
    masks = torch.zeros(2, 4, 4, 2)
    masks[0, 0, :3, 0] = 1  # MI: three voxels, one beyond -1
    out = LesionHistogramd("image", bins=4, value_range=(-1.0, 1.0))({"image": image, "lesion_mask": masks})
    assert out["histogram"].shape == (8,)
    assert torch.allclose(out["histogram"], torch.tensor([2 / 3, 0, 1 / 3, 0, 0, 0, 0, 0]))
    masks[1] = 1  # PMO: every voxel, 29 of them at 0.9
    out = LesionHistogramd("image", bins=4)({"image": image, "lesion_mask": masks})
    assert torch.allclose(out["histogram"][4:], torch.tensor([2, 0, 1, 29]) / 32)


def test_window_intensity_clamps_hounsfield_units():
    """CT: HU clamped to the window, then [-1000, 400] -> [-1, 1]; the volume's own range plays no part."""
    image = torch.tensor([[-2000.0, -1000.0, -300.0, 400.0, 1500.0]])
    out = UnitIntensityd("image", "window", [-1000, 400])({"image": image})["image"]
    assert torch.allclose(out, torch.tensor([[-1.0, -1.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(UserInputError, match="`intensity`"):
        UnitIntensityd("image", "zscore")


def _net(dropout=0.0, bins=4):
    torch.manual_seed(0)
    net = Pseudo3DDiffusionUNet(
        in_channels=2,
        out_channels=2,
        channels=(4, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        num_head_channels=4,
        norm_num_groups=2,
        condition_dim=2 * bins,
        condition_dropout=dropout,
    )
    with torch.no_grad():  # zero-initialised layers (output convs, null embedding) would hide the condition
        for parameter in net.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.3)
    return net


def test_the_condition_reaches_the_output_and_the_null_embedding_needs_dropout():
    x, t = torch.randn(2, 2, 8, 8, 2), torch.tensor([3, 3])
    net = _net().eval()
    dark, bright = torch.zeros(2, 8), torch.zeros(2, 8)
    dark[:, [0, 4]], bright[:, [3, 7]] = 1, 1
    assert not torch.allclose(net(x, t, context=dark), net(x, t, context=bright))
    with pytest.raises(ValueError, match="no trained null embedding"):
        net(x, t)
    with pytest.raises(ValueError, match="context must have shape"):
        net(x, t, context=torch.zeros(2, 5))


def test_condition_dropout_replaces_the_histogram_by_the_null_embedding_in_training_only():
    net = _net(dropout=0.5)
    x, t = torch.randn(16, 2, 8, 8, 1), torch.full((16,), 5)
    h = torch.rand(16, 8)
    net.eval()
    conditional, null = net(x, t, context=h), net(x, t)
    torch.manual_seed(1)
    dropped = net.train()(x, t, context=h)
    as_null = [torch.allclose(dropped[i], null[i], atol=1e-6) for i in range(16)]
    as_cond = [torch.allclose(dropped[i], conditional[i], atol=1e-6) for i in range(16)]
    assert all(a != b for a, b in zip(as_null, as_cond)) and 0 < sum(as_null) < 16
    assert torch.equal(net.eval()(x, t, context=h), conditional), "no dropout in eval mode"


def test_classifier_free_guidance():
    x, t = torch.randn(1, 2, 8, 8, 2), torch.tensor([4])
    h = torch.rand(8)
    net = _net(dropout=0.1).eval()
    conditional, null = net(x, t, context=h[None]), net(x, t)
    assert torch.equal(ConditionedDenoiser(net, h)(x, t), conditional)
    assert torch.allclose(ConditionedDenoiser(net, h, 3.0)(x, t), null + 3.0 * (conditional - null), atol=1e-5)
    with pytest.raises(UserInputError, match="histogram_dropout"):
        ConditionedDenoiser(_net(), h, 2.0)


def test_clusters_are_deterministic_ordered_and_perturbed_by_at_most_ten_percent():
    rng = np.random.default_rng(0)
    hist = rng.random((12, 2, 6)) ** 3
    hist /= hist.sum(-1, keepdims=True)
    centres = histogram_clusters(hist, 3, seed=0)
    assert centres.shape == (3, 2, 6) and np.array_equal(centres, histogram_clusters(hist, 3, seed=0))
    assert [mean_bin(c) for c in centres] == sorted(mean_bin(c) for c in centres)
    perturbed = perturb_histograms(centres[0], np.random.default_rng(5))
    assert np.allclose(perturbed.sum(-1), 1) and not np.allclose(perturbed, centres[0])
    filled = centres[0] > 0
    ratio = perturbed[filled] / centres[0][filled]  # (1 + u) / (the renormalising sum, itself within 1 ± 0.1)
    assert (ratio >= 0.9 / 1.1 - 1e-9).all() and (ratio <= 1.1 / 0.9 + 1e-9).all()
    with pytest.raises(UserInputError, match="texture_clusters"):
        histogram_clusters(hist, 13)


def test_clusters_file_is_validated_naming_the_file(tmp_path):
    path = clusters_path(tmp_path / "lefusion_j_histogram.pt")
    assert path.name == "lefusion_j_histogram_histogram_clusters.json"
    with pytest.raises(MissingInputError, match=f"{path}.*does not exist"):
        read_histogram_clusters(path, CHANNELS, 4, (-1, 1))
    centres = np.full((2, 2, 4), 0.25)
    write_histogram_clusters(path, centres, CHANNELS, 4, (-1, 1))
    assert np.array_equal(read_histogram_clusters(path, CHANNELS, 4, (-1, 1)), centres)
    with pytest.raises(UserInputError, match=f"{path} was written for other histograms: bins 4 .this run: 8"):
        read_histogram_clusters(path, CHANNELS, 8, (-1, 1))
    with pytest.raises(UserInputError, match=f"{path} .*channels"):
        read_histogram_clusters(path, [["MI", "PMO"]], 4, (-1, 1))
    path.write_text(json.dumps({**json.loads(path.read_text()), "centres": [[0.5, 0.5]]}))
    with pytest.raises(UserInputError, match="expected \\[k, 2, 4\\]"):
        read_histogram_clusters(path, CHANNELS, 4, (-1, 1))


class ContextNet(torch.nn.Module):
    """A denoiser that records the condition of every call (its output depends on it)."""

    condition_dropout = 0.0

    def __init__(self):
        super().__init__()
        self.contexts = []

    def forward(self, x, timesteps, context=None):
        self.contexts.append(context[0].clone())
        return 0.1 * x + context.mean()


def _case(seed):
    """A raw uint8 volume with a dark MI region and a bright PMO region (different per seed)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (16, 16, 2)).astype(np.uint8)
    label = np.zeros(image.shape, np.uint8)
    label[3:8, 3:8] = 3
    label[9:12, 9:12] = 4
    image[label == 3] = rng.integers(20, 90, int((label == 3).sum()))
    image[label == 4] = rng.integers(150, 250, int((label == 4).sum()))
    return image, label


@pytest.fixture
def clusters_ckpt(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    dark, bright = np.zeros((2, 4)), np.zeros((2, 4))
    dark[:, 0], bright[:, 3] = 1, 1
    write_histogram_clusters(clusters_path(ckpt), np.stack([dark, bright]), CHANNELS, 4, (-1, 1))
    return ckpt


def _synthesise(texture, ckpt, sample_index=0, seed=3):
    net = ContextNet()
    model = TextureModel(network=net, channels=CHANNELS, name="m", checkpoint=str(ckpt))
    sampler = LesionInpaintingSampler(DDPMScheduler(10, schedule="cosine"), 2, 1, 1)
    synthesizer = LesionTextureSynthesizer([model], sampler, LABELS, (16, 16, 2), texture=texture)
    image, label = _case(0)
    result = synthesizer.synthesize(image, label, seed, sample_index)
    lesion = label > 0
    assert np.array_equal(result.image[~lesion], image[~lesion])
    (request,) = result.info["texture_requests"]
    assert torch.allclose(net.contexts[0], torch.tensor(request["histogram"]).float().reshape(-1), atol=1e-6)
    return request, synthesizer.settings()


def test_texture_modes_ask_for_different_histograms_and_record_them(tmp_path, clusters_ckpt):
    image, label = _case(1)
    cases = [{"case_id": "Ref", "image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz")}]
    nib.save(nib.Nifti1Image(image, np.eye(4)), cases[0]["image"])
    nib.save(nib.Nifti1Image(label, np.eye(4)), cases[0]["label"])
    explicit = {"MI": [0, 1, 1, 0], "PMO": [1, 0, 0, 0]}

    def texture(mode, **kwargs):
        return HistogramTexture(mode, LABELS, bins=4, **kwargs)

    source, settings = _synthesise(texture("source"), clusters_ckpt)
    assert settings["texture"] == "source" and settings["histogram_bins"] == 4
    assert np.allclose(source["histogram"], volume_histograms(*_case(0), LABELS, CHANNELS, 4), atol=1e-6)
    first, _ = _synthesise(texture("clusters"), clusters_ckpt, sample_index=0)
    second, _ = _synthesise(texture("clusters"), clusters_ckpt, sample_index=1)
    third, _ = _synthesise(texture("clusters"), clusters_ckpt, sample_index=2)
    assert (first["cluster"], second["cluster"], third["cluster"]) == (0, 1, 0)
    assert first["clusters_file"] == str(clusters_path(clusters_ckpt))
    assert np.argmax(first["histogram"][0]) == 0 and np.argmax(second["histogram"][0]) == 3
    given, settings = _synthesise(texture("histogram", histograms=explicit), clusters_ckpt)
    assert given["histogram"] == [[0, 0.5, 0.5, 0], [1, 0, 0, 0]] and settings["texture_histogram"] == explicit
    reference, _ = _synthesise(texture("reference", reference="Ref", cases=cases), clusters_ckpt)
    assert reference["reference_case"] == "Ref"
    assert np.allclose(reference["histogram"], volume_histograms(image, label, LABELS, CHANNELS, 4), atol=1e-6)
    requests = [np.asarray(r["histogram"]) for r in (source, first, second, given, reference)]
    assert all(not np.allclose(a, b) for i, a in enumerate(requests) for b in requests[i + 1 :])


def test_texture_choices_are_checked_before_synthesis(tmp_path, clusters_ckpt):
    def build(texture, ckpt=clusters_ckpt):
        model = TextureModel(network=ContextNet(), channels=CHANNELS, name="m", checkpoint=str(ckpt))
        sampler = LesionInpaintingSampler(DDPMScheduler(10), 2, 1, 1)
        return LesionTextureSynthesizer([model], sampler, LABELS, (16, 16, 2), texture=texture)

    with pytest.raises(MissingInputError, match="other_histogram_clusters.json does not exist"):
        build(HistogramTexture("clusters", LABELS, bins=4), tmp_path / "other.pt")
    with pytest.raises(UserInputError, match="was written for other histograms: bins"):
        build(HistogramTexture("clusters", LABELS, bins=8))
    with pytest.raises(UserInputError, match="`texture_histograms` needs, for channel 'PMO'"):
        build(HistogramTexture("histogram", LABELS, bins=4, histograms={"MI": [1, 0, 0, 0]}))
    with pytest.raises(UserInputError, match="`texture_reference` 'Nope' is not a case"):
        build(HistogramTexture("reference", LABELS, bins=4, reference="Nope", cases=[]))
    with pytest.raises(UserInputError, match="`texture` must be one of"):
        HistogramTexture("brightest", LABELS)
    with pytest.raises(UserInputError, match="guidance_scale"):
        build(HistogramTexture("source", LABELS, bins=4, guidance_scale=2.0))


def test_window_synthesis_keeps_hounsfield_background_bit_exact():
    """A CT volume (int16 HU) with values far outside the window: only lesion voxels change, and they come back
    inside the window."""
    rng = np.random.default_rng(0)
    image = rng.integers(-1024, 3000, (16, 16, 2)).astype(np.int16)
    label = np.zeros(image.shape, np.uint8)
    label[4:9, 4:9] = 1
    model = TextureModel(network=lambda x, t: 0.2 * x, channels=[["nodule"]], name="ct")
    sampler = LesionInpaintingSampler(DDPMScheduler(10, schedule="cosine"), 3, 1, 1)
    synthesizer = LesionTextureSynthesizer(
        [model], sampler, {"background": 0, "nodule": 1}, (16, 16, 2), intensity="window", window=(-1000, 400)
    )
    out = synthesizer.synthesize(image, label, seed=0).image
    lesion = label == 1
    assert out.dtype == np.int16 and np.array_equal(out[~lesion], image[~lesion])
    assert not np.array_equal(out[lesion], image[lesion])
    assert out[lesion].min() >= -1000 and out[lesion].max() <= 400
    assert synthesizer.settings()["intensity"] == "window"
