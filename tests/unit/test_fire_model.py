"""The packaged fire/smoke model and its preprocessing, on generated images."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.fire_model import (
    CLASSES,
    DEFAULT_MODEL,
    INPUT_SIZE,
    FireSmokeModel,
    file_sha256,
    preprocess,
)


@pytest.fixture(scope="module")
def model() -> FireSmokeModel:
    return FireSmokeModel()


def _noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_preprocess_gives_an_nchw_float32_batch_of_any_image_size() -> None:
    images = [_noise(1, (720, 1280, 3)), _noise(2, (100, 60, 3)), _noise(3, (224, 224, 3))]
    batch = preprocess(images)
    assert batch.shape == (3, 3, INPUT_SIZE, INPUT_SIZE)
    assert batch.dtype == np.float32


def test_preprocess_feeds_rgb_normalised_with_imagenet_statistics() -> None:
    red = np.zeros((300, 400, 3), np.uint8)
    red[:, :, 2] = 255  # BGR: red only
    batch = preprocess([red])[0]
    # channel 0 is red after the BGR → RGB swap
    np.testing.assert_allclose(batch[0], (255 - 0.485 * 255) / (0.229 * 255), rtol=1e-5)
    np.testing.assert_allclose(batch[1], (0 - 0.456 * 255) / (0.224 * 255), rtol=1e-5)
    np.testing.assert_allclose(batch[2], (0 - 0.406 * 255) / (0.225 * 255), rtol=1e-5)


def test_a_grey_image_is_seen_as_its_three_channel_copy() -> None:
    grey = _noise(4, (240, 320))
    three = np.repeat(grey[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(preprocess([grey]), preprocess([three]))


def test_the_model_takes_what_preprocess_gives_and_returns_two_probabilities(
    model: FireSmokeModel,
) -> None:
    (given,) = model.session.get_inputs()
    assert given.shape[1:] == [3, INPUT_SIZE, INPUT_SIZE]
    out = model.run(preprocess([_noise(i, (360, 640, 3)) for i in range(4)]))
    assert out.shape == (4, len(CLASSES)) and out.dtype == np.float32
    assert ((out >= 0) & (out <= 1)).all()


def test_scores_are_deterministic_and_do_not_depend_on_the_batch(model: FireSmokeModel) -> None:
    images = [_noise(10 + i, (480, 640, 3)) for i in range(3)]
    together = model.run(preprocess(images))
    alone = np.vstack([model.run(preprocess([image])) for image in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_array_equal(model.run(preprocess(images)), together)
    scores = model.score(images)
    np.testing.assert_allclose([(s.fire, s.smoke) for s in scores], together, atol=1e-6)
    assert model.score([]) == []


def test_the_model_card_names_the_packaged_model_by_its_sha256() -> None:
    card = DEFAULT_MODEL.with_suffix(".md").read_text()
    assert file_sha256(DEFAULT_MODEL) in card
    assert DEFAULT_MODEL.stat().st_size <= 20_000_000
