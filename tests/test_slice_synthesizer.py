"""What the slice-wise synthesizers share (FQCDM, EMIT-Diff): the model's input intensities are training's, and a
written image has the source's intensity range and dtype, so a synthetic case can stand where its real case stood."""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import ScaleIntensity

from pathosynth.data.intensity import unit_range
from pathosynth.synthesis.slice_synthesizer import SliceSynthesizer


def test_model_input_is_scaled_as_training_scales_it():
    image = np.random.default_rng(0).normal(300.0, 80.0, size=(12, 10, 3)).astype(np.int16)
    expected = ScaleIntensity(minv=0.0, maxv=1.0)(torch.as_tensor(image[None], dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(unit_range(image), expected, rtol=0, atol=1e-6)
    assert unit_range(np.full((4, 4), 7, dtype=np.int16)).tolist() == np.zeros((4, 4)).tolist()


def test_written_image_takes_the_source_range_and_dtype_or_the_configured_range():
    source = np.array([[-100, 0], [50, 900]], dtype=np.int16)
    unit = np.array([[-0.5, 0.0], [0.5, 1.5]], dtype=np.float32)  # the model may leave [0, 1]: it is clipped

    image, used = SliceSynthesizer((2, 2), (2, 2)).written(unit, source)
    assert image.dtype == np.int16 and used == [-100.0, 900.0]
    assert image.tolist() == [[-100, -100], [400, 900]]

    image, used = SliceSynthesizer((2, 2), (2, 2), intensity_range=(0, 10)).written(unit, source)
    assert image.dtype == np.int16 and used == [0.0, 10.0] and image.tolist() == [[0, 0], [5, 10]]

    image, used = SliceSynthesizer((2, 2), (2, 2)).written(unit, None)
    assert image.dtype == np.float32 and used == [0.0, 1.0] and image.tolist() == [[0.0, 0.0], [0.5, 1.0]]


def test_slice_batches_cover_every_slice_once_in_order():
    synthesizer = SliceSynthesizer((8, 8), (4, 4), slice_batch_size=3)
    assert list(synthesizer.batches(7)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(SliceSynthesizer((8, 8), (4, 4), slice_batch_size=0).batches(2)) == [[0], [1]]
