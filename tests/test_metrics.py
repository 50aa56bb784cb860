"""Metrics against scikit-learn, hand-made ROC cases, aggregation rules and calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    log_loss,
    roc_auc_score,
)

from deepfake_detect.metrics import (
    AGGREGATIONS,
    METRIC_NAMES,
    aggregate_videos,
    binary_metrics,
    choose_threshold,
    confusion,
    equal_error_rate,
    fit_temperature,
    logit_mean,
)

RANK_METRICS = ("auc", "eer", "ap", "tpr_at_fpr_1", "tpr_at_fpr_5")


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    """500 random labels and overlapping, informative scores."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    probabilities = np.clip(0.3 * labels + 0.7 * rng.random(500), 0, 1)
    return labels, probabilities


def test_binary_metrics_equal_sklearn(scored):
    labels, probabilities = scored
    metrics = binary_metrics(labels, probabilities, threshold=0.4)
    predicted = probabilities >= 0.4
    assert tuple(metrics) == METRIC_NAMES
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, probabilities))
    assert metrics["ap"] == pytest.approx(average_precision_score(labels, probabilities))
    assert metrics["log_loss"] == pytest.approx(log_loss(labels, probabilities))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics["eer"] == pytest.approx(equal_error_rate(labels, probabilities)[0])


def test_log_loss_clips_certain_mistakes():
    metrics = binary_metrics([0, 1], [1.0, 0.0])
    assert metrics["log_loss"] == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_equal_error_rate_on_hand_made_scores():
    # Threshold 0.6 lets one of four reals through and misses one of four fakes.
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    probabilities = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    assert equal_error_rate(labels, probabilities) == pytest.approx((0.25, 0.6))


def test_equal_error_rate_is_zero_when_separable():
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx((0.0, 0.8))


def test_equal_error_rate_interpolates_across_a_flat_stretch():
    # ROC: (0, 0) -> (0, 0.5) -> (1, 0.5) -> (1, 1); FPR = FNR = 0.5 halfway along the flat part.
    eer, _ = equal_error_rate([1, 0, 0, 0, 0, 1], [0.9, 0.8, 0.7, 0.6, 0.5, 0.3])
    assert eer == pytest.approx(0.5)


def test_tpr_at_fpr_is_the_best_tpr_within_the_fpr():
    rng = np.random.default_rng(1)
    # 100 reals, so FPRs of 1 % and 5 % are ROC points and no interpolation is involved.
    labels = np.r_[np.zeros(100, int), np.ones(200, int)]
    probabilities = np.r_[rng.random(100), rng.random(200) ** 0.3]
    metrics = binary_metrics(labels, probabilities)
    for name, target in (("tpr_at_fpr_1", 0.01), ("tpr_at_fpr_5", 0.05)):
        best = max(
            np.mean(probabilities[labels == 1] >= t)
            for t in probabilities
            if np.mean(probabilities[labels == 0] >= t) <= target
        )
        assert metrics[name] == pytest.approx(best)


def test_tpr_at_fpr_interpolates_between_roc_points():
    # One real and one fake tied: the ROC is the diagonal.
    metrics = binary_metrics([0, 1], [0.5, 0.5])
    assert metrics["tpr_at_fpr_1"] == pytest.approx(0.01)
    assert metrics["tpr_at_fpr_5"] == pytest.approx(0.05)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_rank_metrics_without_warning(label):
    metrics = binary_metrics([label] * 4, [0.2, 0.4, 0.6, 0.8])
    assert all(math.isnan(metrics[name]) for name in RANK_METRICS)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)
    assert math.isfinite(metrics["log_loss"])
    assert all(math.isnan(value) for value in equal_error_rate([label], [0.3]))


def test_empty_input_gives_all_nan():
    assert all(math.isnan(value) for value in binary_metrics([], []).values())


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="labels"):
        binary_metrics([0, 1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binary_metrics([0, 1], [-2.0, 3.0])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1 \\(fake\\)"):
        binary_metrics([0, 2], [0.2, 0.3])


def test_confusion_counts():
    counts = confusion([0, 0, 0, 1, 1], [0.1, 0.6, 0.2, 0.9, 0.4], threshold=0.5)
    assert counts == {"tn": 2, "fp": 1, "fn": 1, "tp": 1}


FRAMES_FAKE = [0.95, 0.97, 0.5, 0.45, 0.5]
FRAMES_REAL = [0.1, 0.2, 0.3]


def _videos(rule: str):
    video_ids = ["fake"] * len(FRAMES_FAKE) + ["real"] * len(FRAMES_REAL)
    labels = [1] * len(FRAMES_FAKE) + [0] * len(FRAMES_REAL)
    table = aggregate_videos(video_ids, labels, FRAMES_FAKE + FRAMES_REAL, rule)
    return table.set_index("video_id")


@pytest.mark.parametrize(
    ("rule", "fake", "real"),
    [
        ("mean", np.mean(FRAMES_FAKE), 0.2),
        ("median", 0.5, 0.2),
        ("max", 0.97, 0.3),
        ("vote", 0.8, 0.0),
    ],
)
def test_simple_aggregation_rules(rule, fake, real):
    table = _videos(rule)
    assert table.loc["fake", "probability"] == pytest.approx(fake)
    assert table.loc["real", "probability"] == pytest.approx(real)


def test_aggregation_table_layout():
    table = aggregate_videos(["b", "a", "b"], [1, 0, 1], [0.9, 0.2, 0.7])
    assert list(table.columns) == ["video_id", "label", "probability", "n_frames"]
    assert table.video_id.tolist() == ["b", "a"]
    assert table.label.tolist() == [1, 0]
    assert table.n_frames.tolist() == [2, 1]


def test_confident_rule_leans_towards_confident_frames():
    mean, confident = _videos("mean"), _videos("confident")
    assert confident.loc["fake", "probability"] > mean.loc["fake", "probability"] + 0.1
    assert confident.loc["real", "probability"] < mean.loc["real", "probability"]
    undecided = aggregate_videos(["v"] * 3, [0] * 3, [0.5] * 3, "confident")
    assert undecided.probability[0] == pytest.approx(0.5)


def test_logit_mean_averages_log_odds_and_ignores_the_temperature_when_ranking():
    # Odds 9 and 1/9 cancel: the geometric mean of the odds is 1.
    assert logit_mean(np.array([0.9, 0.1])) == pytest.approx(0.5)
    # Odds 3 * 3 * 1/3 -> cube root of 3.
    assert logit_mean(np.array([0.75, 0.75, 0.25])) == pytest.approx(
        3 ** (1 / 3) / (1 + 3 ** (1 / 3))
    )
    # A certain frame does not run to infinity.
    assert 0.5 < logit_mean(np.array([1.0, 0.0, 0.9])) < 1.0
    rng = np.random.default_rng(0)
    videos = [rng.normal(size=5) for _ in range(20)]
    for temperature in (0.5, 1.0, 7.0):
        scores = [logit_mean(1 / (1 + np.exp(-z / temperature))) for z in videos]
        assert np.argsort(scores).tolist() == np.argsort([z.mean() for z in videos]).tolist()


def test_unknown_rule_lists_known_ones():
    with pytest.raises(ValueError, match="known: " + ", ".join(AGGREGATIONS)):
        aggregate_videos(["v"], [0], [0.5], rule="mode")


def test_mixed_labels_in_one_video_are_refused():
    with pytest.raises(ValueError, match="both labels: v"):
        aggregate_videos(["v", "v"], [0, 1], [0.5, 0.5])


def test_choose_threshold_separates_a_separable_case():
    labels = [0, 0, 0, 1, 1, 1]
    probabilities = [0.1, 0.35, 0.3, 0.6, 0.8, 0.7]
    threshold = choose_threshold(labels, probabilities)
    assert 0.35 < threshold < 0.6
    assert binary_metrics(labels, probabilities, threshold)["balanced_accuracy"] == 1.0
    # Halfway in log-odds between the highest real (0.35) and the lowest fake (0.6).
    halfway = np.log(0.35 / 0.65) / 2 + np.log(0.6 / 0.4) / 2
    assert threshold == pytest.approx(1 / (1 + np.exp(-halfway)))


def test_choose_threshold_maximises_balanced_accuracy(scored):
    labels, probabilities = scored
    chosen = binary_metrics(labels, probabilities, choose_threshold(labels, probabilities))
    best = max(binary_metrics(labels, probabilities, t)["balanced_accuracy"] for t in probabilities)
    assert chosen["balanced_accuracy"] == pytest.approx(best)


def test_choose_threshold_stays_inside_zero_one_when_the_sigmoid_saturates():
    labels, probabilities = [0, 0, 1, 1], [0.0, 0.0, 1.0, 1.0]  # float32 sigmoid of +-20
    threshold = choose_threshold(labels, probabilities)
    assert 0 < threshold < 1, "a model artifact refuses a threshold of exactly 0 or 1"
    assert binary_metrics(labels, probabilities, threshold)["balanced_accuracy"] == 1.0


def test_choose_threshold_defaults_without_both_classes():
    assert choose_threshold([1, 1], [0.2, 0.9]) == 0.5


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 4.0, 20_000)
    labels = rng.random(logits.size) < 1 / (1 + np.exp(-logits / 2.0))
    assert fit_temperature(labels.astype(int), logits) == pytest.approx(2.0, rel=0.2)


@pytest.mark.parametrize(("labels", "logits"), [([], []), ([1, 1], [2.0, 3.0])])
def test_fit_temperature_defaults_without_both_classes(labels, logits):
    assert fit_temperature(labels, logits) == 1.0


def test_expected_calibration_error_matches_a_hand_computed_example():
    from deepfake_detect.metrics import expected_calibration_error

    # bins of width 0.1: [0.1] real -> |0 - 0.1|; [0.9] fake -> |1 - 0.9|; 0.6 and 0.65 share
    # the bin [0.6, 0.7), one fake in two -> |0.5 - 0.625|; weighted 1/4, 1/4, 2/4
    labels, probabilities = [0, 1, 1, 0], [0.1, 0.9, 0.6, 0.65]
    expected = 0.25 * 0.1 + 0.25 * 0.1 + 0.5 * 0.125
    assert expected_calibration_error(labels, probabilities) == pytest.approx(expected)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0  # 1.0 falls in the last bin
    assert math.isnan(expected_calibration_error([], []))


def test_brier_score_is_the_mean_squared_error_of_the_probability():
    from deepfake_detect.metrics import brier_score

    assert brier_score([0, 1], [0.2, 0.7]) == pytest.approx((0.04 + 0.09) / 2)


def test_bootstrap_interval_holds_the_auc_and_narrows_with_more_clips():
    from sklearn.metrics import roc_auc_score

    from deepfake_detect.metrics import bootstrap_auc_interval

    rng = np.random.default_rng(0)
    widths = []
    for n in (12, 48, 192):
        labels = np.r_[np.zeros(n), np.ones(n)]
        scores = rng.normal(labels, 1.0)
        low, high = bootstrap_auc_interval(labels, scores)
        assert low <= roc_auc_score(labels, scores) <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert bootstrap_auc_interval(labels, scores) == bootstrap_auc_interval(labels, scores)
    assert all(math.isnan(v) for v in bootstrap_auc_interval([0, 0], [0.1, 0.2]))
