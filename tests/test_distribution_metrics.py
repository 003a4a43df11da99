"""Claims about FID/KID (pathosynth.metrics.distribution) and the feature extractors (pathosynth.metrics.features)."""

import math

import numpy as np
import pytest
import torch

from pathosynth.metrics.distribution import (
    distribution_scores,
    extract_features,
    frechet_distance,
    kernel_inception_distance,
)
from pathosynth.metrics.extractors import EXTRACTORS, make_extractor
from pathosynth.metrics.features import RandomConvFeatures, preprocess_images
from pathosynth.metrics.pretrained_features import (
    MonaiDenseNetFeatures,
    TorchvisionInceptionFeatures,
    torchvision_available,
)


def _exact_gaussian_sample(n, mean, cov, seed):
    """n samples whose *sample* mean and (N-1) covariance are exactly ``mean`` and ``cov`` (up to rounding)."""
    z = np.random.RandomState(seed).standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whitened: cov(z) == I
    return np.asarray(mean) + z @ np.linalg.cholesky(cov).T


def _blobs(n, seed, size=64, k=6):
    """Procedural images: k smooth Gaussian blobs of random position, width and brightness per image."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.zeros((n, size, size))
    for i in range(n):
        for _ in range(k):
            cy, cx = rng.uniform(0, size, 2)
            s, a = rng.uniform(3, 10), rng.uniform(0.3, 1.0)
            out[i] += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------------------------ FID
def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.RandomState(0).standard_normal((500, 32)) * np.linspace(0.5, 3, 32) + 4.0
    assert abs(frechet_distance(x, x)) < 1e-6
    assert abs(frechet_distance(torch.from_numpy(x).float(), torch.from_numpy(x).float())) < 1e-6  # tensors, float32 in


def test_fid_equals_the_closed_form_for_gaussians_with_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, -1.0, 0.0, 0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([2.0, 1.0, 1.0, 0.5])
    a = _exact_gaussian_sample(300, mu1, np.diag(var1), seed=1)
    b = _exact_gaussian_sample(200, mu2, np.diag(var2), seed=2)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)
    # the same Gaussians in a rotated basis (full, non-diagonal covariances) have the same distance
    q, _ = np.linalg.qr(np.random.RandomState(3).standard_normal((4, 4)))
    assert frechet_distance(a @ q.T, b @ q.T) == pytest.approx(closed, rel=1e-9)


def test_fid_is_symmetric_and_positive_for_different_sets():
    rng = np.random.RandomState(4)
    a = rng.standard_normal((300, 20))
    b = rng.standard_normal((150, 20)) @ rng.standard_normal((20, 20)) * 0.3 + 0.2
    ab, ba = frechet_distance(a, b), frechet_distance(b, a)
    assert ab > 1.0
    assert ab == pytest.approx(ba, rel=1e-9)


def test_fid_with_fewer_samples_than_dims_stays_finite_and_near_zero_for_identical_sets():
    rng = np.random.RandomState(5)
    a, b = rng.standard_normal((40, 128)) + 3.0, rng.standard_normal((40, 128))
    trace = np.trace(np.cov(a, rowvar=False))
    assert abs(frechet_distance(a, a)) < 1e-6 * trace  # singular covariances: only rounding remains
    assert math.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 128 * 9 * 0.9  # ||mu diff||^2 ~ 128 * 9


# ------------------------------------------------------------------------------------------------------ KID
def _kid_reference(x, y):
    """Unbiased MMD² with k(x, y) = (x.y / d + 1)^3, written out term by term."""
    m, d = len(x), x.shape[1]
    k = lambda u, v: (u @ v / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.RandomState(6)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.3
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=12)  # whole sets: every subset identical
    assert mean == pytest.approx(_kid_reference(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_near_zero_for_identical_distributions_and_grows_with_a_mean_shift():
    rng = np.random.RandomState(7)
    a, b = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    same_mean, same_std = kernel_inception_distance(a, b, subsets=50, subset_size=200)
    assert same_std > 0 and abs(same_mean) < 2 * same_std
    kids = [kernel_inception_distance(a, b + shift, subsets=50, subset_size=200)[0] for shift in (0.25, 0.5, 1.0)]
    assert kids[0] > same_mean + 3 * same_std
    assert kids[0] < kids[1] < kids[2]


def test_kid_on_small_sets_caps_the_subset_size_and_is_deterministic_given_the_seed():
    rng = np.random.RandomState(8)
    a, b = rng.standard_normal((5, 8)), rng.standard_normal((7, 8))
    mean, std = kernel_inception_distance(a, b)  # subset_size=1000 > 5: capped at 5
    assert math.isfinite(mean) and math.isfinite(std) and std > 0  # b still has 21 different 5-subsets
    assert kernel_inception_distance(a, b, seed=3) == kernel_inception_distance(a, b, seed=3)
    assert kernel_inception_distance(a, b, seed=3) != kernel_inception_distance(a, b, seed=4)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(a[:1], b)


# --------------------------------------------------------------------------------------------- extractors
def test_random_conv_features_are_deterministic_per_seed_and_differ_between_seeds():
    images = torch.from_numpy(_blobs(6, 0, size=48)).unsqueeze(1)
    torch.manual_seed(123)  # the global torch RNG must not matter
    f1 = RandomConvFeatures(dim=128, seed=0, input_size=48)(images)
    torch.manual_seed(456)
    f2 = RandomConvFeatures(dim=128, seed=0, input_size=48)(images)
    f3 = RandomConvFeatures(dim=128, seed=1, input_size=48)(images)
    assert f1.shape == (6, 128) and torch.isfinite(f1).all()
    assert torch.equal(f1, f2)
    assert not torch.allclose(f1, f3, atol=1e-3)


def test_random_conv_v1_weights_are_pinned():
    """random-conv-v1 must never change silently (scores would stop being comparable): weights are pinned."""
    ext = RandomConvFeatures()
    assert ext.name == "random-conv-v1 seed=0 dim=256 size=128" and ext.dim == 256
    assert sum(p.numel() for p in ext.parameters()) == 55584
    assert ext.convs[0].weight.flatten()[:3].tolist() == pytest.approx([0.8315822, 0.1886359, 0.4613815], abs=1e-7)
    assert float(ext.convs[-1].weight.double().sum()) == pytest.approx(-7.491555572840866, abs=1e-5)


def test_features_do_not_depend_on_the_intensity_range_of_the_images():
    images = torch.from_numpy(_blobs(4, 1, size=40)).unsqueeze(1)
    ext = RandomConvFeatures(dim=64, input_size=40)
    torch.testing.assert_close(ext(images * 1000.0 + 50.0), ext(images), atol=1e-4, rtol=1e-4)
    x = preprocess_images(images * 7 - 3, 32, channels=3)
    assert x.shape == (4, 3, 32, 32) and float(x.min()) >= 0.0 and float(x.max()) == pytest.approx(1.0, abs=1e-6)


def test_distribution_scores_see_noise_more_than_a_new_sample_of_the_same_distribution():
    """A noisier copy of a set must be farther than an independent sample of the same procedure: the embedding
    responds to the kind of change synthesis makes, not just to which images were drawn."""
    a, b = _blobs(96, 1), _blobs(96, 2)
    noisy = a + np.random.RandomState(3).normal(0, 0.05, a.shape).astype(np.float32) * a.max(axis=(1, 2), keepdims=True)
    ext = RandomConvFeatures(dim=128, seed=0, input_size=64)
    kw = dict(batch_size=40, kid_subsets=20, kid_subset_size=48)
    same = distribution_scores(a, b, ext, **kw)
    noise = distribution_scores(a, torch.from_numpy(noisy).unsqueeze(1), ext, **kw)  # (N, 1, H, W) tensor
    assert noise["fid"] > 3 * same["fid"] > 0
    assert noise["kid_mean"] > same["kid_mean"] + 3 * (same["kid_std"] + noise["kid_std"])
    assert same["extractor"] == "random-conv-v1 seed=0 dim=128 size=64"
    assert (same["n_a"], same["n_b"], same["feature_dim"], same["kid_subset_size"]) == (96, 96, 128, 48)
    # batch size does not change the features
    np.testing.assert_allclose(
        extract_features(a[:10], ext, batch_size=3), extract_features(a[:10], ext, batch_size=10), rtol=1e-5, atol=1e-6
    )


def test_missing_local_weights_raise_file_not_found_naming_the_path(tmp_path):
    missing = tmp_path / "nope" / "resnet50_radimagenet.pt"
    with pytest.raises(FileNotFoundError, match="resnet50_radimagenet.pt") as err:
        make_extractor("monai-resnet50", weights_path=missing)
    assert str(missing) in str(err.value) and "resnet50" in str(err.value)
    with pytest.raises(ValueError, match="needs weights_path"):
        make_extractor("monai-densenet121")


def test_make_extractor_rejects_unknown_names_listing_the_choices():
    with pytest.raises(ValueError, match="unknown feature extractor 'inception'") as err:
        make_extractor("inception")
    for choice in ("random-conv", "monai-resnet50", "monai-densenet121", "torchvision-inception-v3"):
        assert choice in str(err.value) and choice in EXTRACTORS
    with pytest.raises(ValueError, match="weight-free"):
        make_extractor("random-conv", weights_path="x.pt")
    assert make_extractor("random_conv", dim=64, seed=2).name.startswith("random-conv-v1 seed=2 dim=64")


def test_monai_resnet_extractor_loads_a_local_state_dict_with_weights_only(tmp_path, monkeypatch):
    from monai.networks.nets import resnet18

    torch.manual_seed(0)
    net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=3, conv1_t_stride=2).eval()
    path = tmp_path / "my_resnet18.pt"
    torch.save({"network": net.state_dict(), "metadata": {"epoch": 3}}, path)  # a pathosynth-style checkpoint
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    ext = make_extractor("monai-resnet18", weights_path=path, input_size=64)
    assert calls and all(c.get("weights_only") is True and c.get("map_location") == "cpu" for c in calls)
    images = torch.rand(5, 1, 80, 80) * 300
    feats = ext(images)
    assert ext.dim == 512 and feats.shape == (5, 512)
    assert ext.name.startswith("monai-resnet18 weights=my_resnet18.pt sha256=")
    # the loaded weights are the ones used: penultimate features of the saved net on the same input
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(feats, net(preprocess_images(images, 64, 1)))
    # torchvision's ResNet layout (3 channels, no downsample bias, 1000-class fc) loads too; gray input is repeated
    tv_like = resnet18(spatial_dims=2, n_input_channels=3, num_classes=1000, bias_downsample=False)
    torch.save(tv_like.state_dict(), tmp_path / "tv_resnet18.pt")
    ext3 = make_extractor("monai-resnet18", weights_path=tmp_path / "tv_resnet18.pt", input_size=32)
    assert ext3.in_channels == 3 and "norm=imagenet" in ext3.name and ext3(images).shape == (5, 512)


def test_weights_for_another_architecture_are_refused_with_the_architecture_named(tmp_path):
    from monai.networks.nets import resnet18

    path = tmp_path / "r18.pt"
    torch.save(resnet18(spatial_dims=2, n_input_channels=3).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit MONAI resnet50"):
        make_extractor("monai-resnet50", weights_path=path)
    pickled = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a pickled module, not a state dict
    with pytest.raises(ValueError, match="weights_only"):
        make_extractor("monai-resnet18", weights_path=pickled)


def test_monai_densenet_extractor_accepts_torchvision_key_layout_and_repeats_gray_channels(tmp_path):
    from monai.networks.nets import DenseNet121

    torch.manual_seed(1)
    state = DenseNet121(spatial_dims=2, in_channels=3, out_channels=1000).state_dict()
    tv_state = {k.replace(".layers.", ".").replace("class_layers.out", "classifier"): v for k, v in state.items()}
    assert "features.denseblock1.denselayer1.norm1.weight" in tv_state  # torchvision naming
    torch.save(state, tmp_path / "monai.pt")
    torch.save(tv_state, tmp_path / "tv.pt")
    images = torch.rand(3, 28, 28)  # (N, H, W) gray chest X-ray sized
    f_monai = MonaiDenseNetFeatures(tmp_path / "monai.pt", input_size=64)(images)
    f_tv = make_extractor("monai-densenet121", weights_path=tmp_path / "tv.pt", input_size=64)(images)
    assert f_monai.shape == (3, 1024)
    torch.testing.assert_close(f_monai, f_tv)


@pytest.mark.skipif(
    torchvision_available(), reason="torchvision imports here; the ImportError path cannot be exercised"
)
def test_torchvision_extractor_raises_a_clear_import_error_when_torchvision_is_unusable(tmp_path):
    with pytest.raises(ImportError, match="torchvision.*monai-resnet50"):
        TorchvisionInceptionFeatures(tmp_path / "inception.pt")


def test_torchvision_inception_extractor_with_local_weights(tmp_path):
    if not torchvision_available():
        pytest.skip("torchvision is not importable in this environment")
    import torchvision

    path = tmp_path / "inception.pt"
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    ext = make_extractor("torchvision-inception-v3", weights_path=path)
    assert ext.dim == 2048 and ext(torch.rand(2, 1, 64, 64)).shape == (2, 2048)
