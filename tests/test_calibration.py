import numpy as np
import pytest

from deepfake_detect.calibration import calibrate, fit_uncertain_band, fit_video_temperature
from deepfake_detect.scoring import VideoCrops, score_video


def videos_of(labels_per_video, crops=4, rule="mean"):
    ids = [v for v, _ in enumerate(labels_per_video) for _ in range(crops)]
    labels = [label for label in labels_per_video for _ in range(crops)]
    return VideoCrops.of(ids, labels, np.zeros(len(ids)), np.arange(len(ids)), rule), labels


def test_video_crops_score_each_video_with_the_one_rule():
    videos = VideoCrops.of(["a", "a", "b", "b"], [1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], "max")
    scores = videos.scores([0.9, 0.2, 0.3, 0.1])
    assert list(videos.video_ids) == ["a", "b"] and list(videos.labels) == [1, 0]
    assert scores[0] == score_video([0.9, 0.2], [0, 1], [0, 0], "max").probability == 0.9
    assert scores[1] == 0.3


def test_an_overconfident_model_is_cooled_at_video_level():
    rng = np.random.default_rng(0)
    videos, _ = videos_of([0, 1] * 20)
    # each video's crops share a logit that is right on average but far too large, with
    # errors: a video's mean probability is then far too sure
    per_video = 8 * (np.array([0, 1] * 20) - 0.5) + rng.normal(0, 6, 40)
    logits = np.repeat(per_video, 4)
    fit = fit_video_temperature(videos, logits)
    assert fit.temperature > 1.5 and not fit.warnings


def test_a_temperature_at_its_bound_is_a_warning():
    videos, labels = videos_of([0, 1] * 10)
    rng = np.random.default_rng(1)
    fit = fit_video_temperature(videos, rng.normal(0, 1, len(labels)))  # no signal at all
    assert fit.temperature == pytest.approx(20, rel=0.02)
    assert fit.warnings and "bound" in fit.warnings[0]


def test_uncertain_band_covers_the_muddle_around_the_threshold():
    # clean calls far from 0.5, a mix of both classes between 0.4 and 0.6
    labels = [0] * 10 + [1] * 10 + [0, 1, 0, 1, 0, 1]
    probabilities = [0.1] * 10 + [0.9] * 10 + [0.42, 0.45, 0.52, 0.48, 0.58, 0.55]
    low, high = fit_uncertain_band(labels, probabilities, threshold=0.5)
    # four wrong calls (0.45, 0.48 fakes; 0.52, 0.58 reals): the narrowest band that leaves
    # the most videos outside with 95% of them right holds three and lets one error out
    p = np.array(probabilities)
    inside = (p > low) & (p < high)
    assert sorted(p[inside]) == [0.45, 0.48, 0.52]
    outside_right = (p[~inside] >= 0.5) == np.array(labels)[~inside]
    assert outside_right.mean() >= 0.95


def test_no_band_when_validation_is_already_right():
    assert fit_uncertain_band([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.5) is None
    assert fit_uncertain_band([0, 0], [0.1, 0.6], 0.5) is None  # one class: nothing to fit


def test_calibrate_fits_threshold_and_band_on_calibrated_video_scores():
    rng = np.random.default_rng(2)
    videos, labels = videos_of([0, 1] * 15)
    logits = 3 * (np.array(labels) - 0.5) + rng.normal(0, 2, len(labels))
    fitted = calibrate(videos, logits)
    assert 0 < fitted.threshold < 1 and fitted.temperature > 0
    assert fitted.video_probabilities.shape == (30,)
    if fitted.uncertain_band is not None:
        low, high = fitted.uncertain_band
        assert low <= fitted.threshold <= high


def test_calibration_never_sharpens_a_well_separated_validation_set():
    videos, labels = videos_of([0, 1] * 8)
    logits = 2.0 * (np.array(labels) - 0.5)  # every video right, each crop mildly sure
    fit = fit_video_temperature(videos, logits)
    assert fit.temperature == 1.0  # the fit would sharpen towards certainty: held at 1
    assert fit.warnings and "held at its bound 1" in fit.warnings[0]
