"""What validation fits besides the weights, at the video level under the video rule
(scoring.py): the temperature that calibrates frame logits, the decision threshold, and the
band around it where the model cannot call a video reliably (the UNCERTAIN verdict).

A temperature alone, not Platt's scale and shift: a shift fitted on the few validation people
follows their offset and carried badly to other people (demo seed 0: test ECE 0.345 with a
shift, 0.070 without). And the temperature only cools (T >= 1): where validation's few videos
are well separated, the best fit sharpens the scores towards certainty that people outside
validation do not share (demo seed 0, real-only training: T = 0.05 gave test ECE 0.418 and,
since the mean of sharpened frames is a vote, test AUC 0.847; T = 1 gave 0.263 and 0.889).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar
from scipy.special import expit

from deepfake_detect.metrics import LOG_LOSS_EPS, TEMPERATURE_BOUNDS, choose_threshold
from deepfake_detect.scoring import VideoCrops

# The band is the narrowest around the threshold outside which validation's calls are at
# least this accurate, while at most MAX_UNCERTAIN_SHARE of the validation videos fall in it.
UNCERTAIN_TARGET_ACCURACY = 0.95
MAX_UNCERTAIN_SHARE = 0.5
# A fitted temperature this close (relative) to a bound counts as at the bound.
BOUND_TOLERANCE = 0.01
# The lowest temperature the fit may choose: calibration cools the model, never sharpens it.
MIN_TEMPERATURE = 1.0


def video_log_loss(labels: ArrayLike, probabilities: ArrayLike) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass
class TemperatureFit:
    """The temperature minimising the video-level log loss, and whether it hit a bound."""

    temperature: float
    log_loss: float
    warnings: list[str] = field(default_factory=list)


def fit_video_temperature(videos: VideoCrops, logits: ArrayLike) -> TemperatureFit:
    """The temperature T (from MIN_TEMPERATURE to the upper of metrics.TEMPERATURE_BOUNDS)
    for which the videos' scores, from sigmoid(logit / T) of their crops under the rule, have
    the lowest log loss.

    1.0 when a class is missing. A fit at a bound is returned with a warning: at the upper one
    validation barely tells the classes apart; at the lower one it asked for sharper scores,
    which a few validation videos cannot justify, and the model's own are kept.
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    if np.unique(videos.labels).size < 2:
        return TemperatureFit(1.0, video_log_loss(videos.labels, videos.scores(expit(z))))

    def loss(log_temperature: float) -> float:
        return video_log_loss(videos.labels, videos.scores(expit(z / math.exp(log_temperature))))

    low, high = MIN_TEMPERATURE, TEMPERATURE_BOUNDS[1]
    result = minimize_scalar(loss, bounds=(math.log(low), math.log(high)), method="bounded")
    temperature = float(math.exp(result.x))
    warnings = []
    if abs(temperature - high) <= BOUND_TOLERANCE * high:
        warnings.append(
            f"temperature {temperature:.3g} is at its bound {high:g} (validation scores barely "
            "separate the classes): the probabilities are not calibrated"
        )
    if abs(temperature - low) <= BOUND_TOLERANCE * low:
        warnings.append(
            f"temperature held at its bound {low:g}: validation would sharpen the scores, which "
            "its few videos cannot justify; the probabilities may be overconfident"
        )
        temperature = low
    return TemperatureFit(temperature, float(result.fun), warnings)


def fit_uncertain_band(
    labels: ArrayLike,
    probabilities: ArrayLike,
    threshold: float,
    target_accuracy: float = UNCERTAIN_TARGET_ACCURACY,
    max_share: float = MAX_UNCERTAIN_SHARE,
) -> tuple[float, float] | None:
    """The band (low, high) around `threshold` whose videos get the verdict UNCERTAIN.

    Among bands whose edges sit halfway between neighbouring validation scores (or at the
    threshold), the one that leaves the most videos outside while the calls outside it are at
    least `target_accuracy` right, and at most `max_share` of the videos inside; the
    narrowest of those. None when validation is already that accurate without a band, or no
    band reaches it, or a class is missing.
    """
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if y.size == 0 or np.unique(y).size < 2:
        return None
    called = (p >= threshold).astype(np.int64)
    if np.mean(called == y) >= target_accuracy:
        return None
    below, above = np.sort(p[p < threshold]), np.sort(p[p >= threshold])
    lows = [threshold] + [(a + b) / 2 for a, b in itertools.pairwise(below)]
    lows += [below[0] / 2] if below.size else []
    highs = [threshold] + [(a + b) / 2 for a, b in itertools.pairwise(above)]
    highs += [(above[-1] + 1) / 2] if above.size else []
    best: tuple[int, float, float, float] | None = None
    for low in lows:
        for high in highs:
            inside = (p > low) & (p < high)
            if inside.mean() > max_share or inside.all():
                continue
            if np.mean(called[~inside] == y[~inside]) < target_accuracy:
                continue
            candidate = (int((~inside).sum()), -(high - low), low, high)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
    if best is None or best[2] == best[3]:
        return None
    return float(best[2]), float(best[3])


@dataclass
class VideoCalibration:
    """Everything fitted on validation videos: temperature, threshold, uncertain band."""

    temperature: float
    threshold: float
    uncertain_band: tuple[float, float] | None
    video_probabilities: np.ndarray
    warnings: list[str]


def calibrate(videos: VideoCrops, logits: ArrayLike) -> VideoCalibration:
    """Fit the temperature, then the threshold and the uncertain band on the calibrated video
    scores, all under the videos' rule."""
    fit = fit_video_temperature(videos, logits)
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    probabilities = videos.scores(expit(z / fit.temperature))
    threshold = choose_threshold(videos.labels, probabilities)
    band = fit_uncertain_band(videos.labels, probabilities, threshold)
    return VideoCalibration(fit.temperature, threshold, band, probabilities, fit.warnings)
