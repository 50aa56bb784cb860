"""Stage 3's outputs a person looks at: an HTML report, Grad-CAM heatmaps, annotated videos.

The report is one self-contained HTML file (inline CSS, images as data URIs) so it can be
mailed or archived as is: per video the verdict, the score timeline with the sampled times
and the fake-looking segments marked, faces from inside those segments and the most
suspicious ones. Grad-CAM shows which regions of a face crop pushed its score towards fake;
the annotated video boxes each face in the colour of its score (all of it, or its segments).
"""

from __future__ import annotations

import base64
import io
import math
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from html import escape
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from torch import nn

from deepfake_detect.artifact import load_artifact
from deepfake_detect.crops import CropConfig
from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.files import atomic_path
from deepfake_detect.inference import FrameScore, Predictor, VideoPrediction
from deepfake_detect.models import gradcam_layer, to_model_input
from deepfake_detect.segments import Segment, clock
from deepfake_detect.status import Verdict
from deepfake_detect.video import VIDEO_EXTENSIONS, iter_frames, probe, write_video


class ReportError(DeepfakeDetectError, ValueError):
    """An annotated video that cannot be written as asked; one line naming the file."""


# --- Grad-CAM ----------------------------------------------------------------------------------


def gradcam(network: nn.Module, layer: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Grad-CAM heatmaps (N, H, W) in [0, 1] of the fake logit, at the input's resolution.

    Args:
        network: maps a normalised batch (N, 3, H, W) to one logit per image.
        layer: the feature map to explain (`models.gradcam_layer(network)`).
        images: the normalised batch, on the network's device.
    """
    captured: dict[str, torch.Tensor] = {}
    # The hook sits on a network that other threads may run at the same time (serve's
    # workers share one model): it must ignore every pass but this thread's own.
    this_thread = threading.get_ident()

    def keep_activations(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if threading.get_ident() != this_thread:
            return
        captured["activations"] = output.detach().clone()
        # A tensor hook, not a module backward hook: those fail when an in-place ReLU follows
        # the layer (meso nets), while this one still sees the gradient of the layer's output.
        output.register_hook(lambda grad: captured.__setitem__("gradients", grad.detach()))

    was_training = network.training
    handle = layer.register_forward_hook(keep_activations)
    try:
        network.eval()
        with torch.inference_mode(False), torch.enable_grad():
            inputs = images.detach().clone().requires_grad_(True)
            # Differentiating with respect to the input leaves the weights' .grad untouched.
            torch.autograd.grad(network(inputs).sum(), inputs)
    finally:
        handle.remove()
        network.train(was_training)
    activations, gradients = (_feature_grid(captured[k]) for k in ("activations", "gradients"))
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    maps = torch.relu((weights * activations).sum(dim=1)).float().cpu().numpy()
    height, width = images.shape[-2:]
    return np.stack([_unit_range(cv2.resize(m, (width, height))) for m in maps])


def _feature_grid(features: torch.Tensor) -> torch.Tensor:
    """A feature map as (N, C, H, W); a transformer's tokens (N, T, C) become the square grid
    of their last patch tokens (the class and register tokens come first)."""
    if features.ndim == 4:
        return features
    if features.ndim == 3:
        side = math.isqrt(features.shape[1])
        patches = features[:, -side * side :]
        return patches.transpose(1, 2).reshape(len(features), -1, side, side)
    raise ValueError(f"Grad-CAM needs a feature map or tokens, got shape {tuple(features.shape)}")


def _unit_range(heatmap: np.ndarray) -> np.ndarray:
    peak = float(heatmap.max())
    return np.clip(heatmap / peak, 0, 1) if peak > 0 else np.zeros_like(heatmap)


def heatmap_overlay(crop: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The crop (RGB uint8) under a colour-mapped heatmap, at the crop's size.

    The colour's opacity follows the heat, so the face stays visible where the model did
    not look.
    """
    height, width = crop.shape[:2]
    heat = cv2.resize(heatmap, (width, height))
    colours = cv2.cvtColor(
        cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    opacity = (0.15 + 0.55 * heat)[..., None]
    return np.uint8(np.rint(crop * (1 - opacity) + colours * opacity))


# --- HTML report -------------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; --ink: #1b1b1f; --muted: #4a4a55; --line: #d6d6de;
        --fake: #a3001b; --real: #1b5e20; --unknown: #5c4400; --uncertain: #4a5060;
        --panel: #f5f5f8; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #fff; }
header, main { max-width: 60rem; margin: 0 auto; padding: 1rem; }
header { border-bottom: 1px solid var(--line); }
h1 { font-size: 1.6rem; margin: 0.5rem 0; }
h2 { font-size: 1.3rem; margin: 0; overflow-wrap: anywhere; }
h3 { font-size: 1.05rem; margin: 1.25rem 0 0.5rem; }
section { border: 1px solid var(--line); border-radius: 8px; padding: 1rem; margin: 1.5rem 0; }
.path, .note { color: var(--muted); font-size: 0.9rem; overflow-wrap: anywhere; margin: 0.25rem 0; }
.badge { display: inline-block; padding: 0.1rem 0.6rem; border-radius: 4px; color: #fff;
         font-weight: 700; letter-spacing: 0.03em; white-space: nowrap; }
.badge.fake { background: var(--fake); } .badge.real { background: var(--real); }
.badge.unknown { background: var(--unknown); } .badge.uncertain { background: var(--uncertain); }
.verdict { font-size: 1.1rem; margin: 0.75rem 0; }
.uncertain-reason { border-left: 4px solid var(--uncertain); padding: 0.5rem 0.75rem;
                    background: var(--panel); }
.segments { font-weight: 600; color: var(--fake); margin: 0.25rem 0 0.75rem; }
.error { background: #fff4e5; border-left: 4px solid var(--unknown); padding: 0.5rem 0.75rem;
         overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: var(--muted); font-size: 0.9rem; padding-bottom: 0.25rem; }
th, td { text-align: left; padding: 0.35rem 0.6rem; border-bottom: 1px solid var(--line); }
th { background: var(--panel); }
td a { color: #0b4fa8; overflow-wrap: anywhere; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0.5rem 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; display: block; }
.timeline { max-width: 42rem; width: 100%; }
.faces { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); gap: 1rem; }
figure { margin: 0; background: var(--panel); border-radius: 6px; padding: 0.5rem; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 0.4rem; }
.pair img { width: 100%; image-rendering: auto; border-radius: 3px; }
figcaption { font-size: 0.85rem; margin-top: 0.35rem; }
@media (max-width: 30rem) {
  header, main { padding: 0.75rem; } section { padding: 0.75rem; }
  th, td { padding: 0.3rem 0.4rem; }
}
"""


SHOWN_SEGMENTS = 8  # segments with a face shown; the table lists them all
LONG_VIDEO_S = 120  # timelines of longer videos count in mm:ss
RUG_Y = -0.08  # the sampled times are ticked along this height, under the scores


def write_report(
    predictions: list[VideoPrediction], predictor: Predictor, path: Path, top_crops: int = 4
) -> Path:
    """Write one self-contained HTML page on a run: a verdict, score timeline, fake-looking
    segments and most suspicious faces with Grad-CAM, and processing details per video.

    Face crops appear only for predictions made with `predictor.predict(..., keep_crops=True)`.
    """
    explainer = _Explainer(predictor) if any(p.crops is not None for p in predictions) else None
    sections = [
        _video_section(number, prediction, explainer, top_crops)
        for number, prediction in enumerate(predictions, start=1)
    ]
    page = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Deepfake detection report</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"{_page_header(predictions, predictor)}\n<main>\n{''.join(sections)}</main>\n"
        "</body>\n</html>\n"
    )
    with atomic_path(path) as temporary:
        temporary.write_text(page, encoding="utf-8")
    return path


class _Explainer:
    """The torch network behind a predictor, for Grad-CAM (also when it predicts with ONNX)."""

    def __init__(self, predictor: Predictor) -> None:
        if predictor.network is not None:
            self.network = predictor.network
        else:
            self.network, _ = load_artifact(predictor.model_path)
        self.layer = gradcam_layer(self.network)
        self.model = predictor.artifact.model

    def overlays(self, crops: np.ndarray) -> list[np.ndarray]:
        device = next(self.network.parameters()).device
        images = torch.from_numpy(to_model_input(crops, self.model)).to(device)
        heatmaps = gradcam(self.network, self.layer, images)
        return [heatmap_overlay(c, h) for c, h in zip(crops, heatmaps, strict=True)]


def _verdict_label(prediction: VideoPrediction) -> str:
    """REAL, FAKE, UNCERTAIN, or "could not score"."""
    return prediction.verdict if prediction.scored and prediction.verdict else "could not score"


def _badge(prediction: VideoPrediction) -> str:
    label = _verdict_label(prediction)
    kind = label.lower() if label in set(Verdict) else "unknown"
    return f'<span class="badge {kind}">{escape(label)}</span>'


def _definitions(items: dict[str, str]) -> str:
    """A definition list; the values are escaped here."""
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items.items())
    return f"<dl>{rows}</dl>"


def _page_header(predictions: list[VideoPrediction], predictor: Predictor) -> str:
    model = predictor.artifact.model
    counts = Counter(_verdict_label(p) for p in predictions)
    summary = {
        "Model": f"{model.name} ({model.input_size} px input), weights sha256 "
        f"{predictor.model_digest}",
        "Date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "Videos": str(len(predictions)),
        "Verdicts": ", ".join(f"{label}: {n}" for label, n in sorted(counts.items())) or "none",
        "Threshold": f"{predictor.threshold:.3f} on the calibrated fake probability",
        "Uncertain band": _band(predictor.uncertain_band),
        "Face crops": _crop_settings(predictor.crop_config),
    }
    return (
        f"<header>\n<h1>Deepfake detection report</h1>\n{_definitions(summary)}\n"
        f"{_summary_table(predictions)}</header>"
    )


def _band(band: tuple[float, float] | None) -> str:
    if band is None:
        return "none (every scored video is called REAL or FAKE)"
    return (
        f"{band[0]:.3f}-{band[1]:.3f}: videos scored inside are UNCERTAIN (on validation "
        "the model could not call them reliably)"
    )


def _crop_settings(crop: CropConfig) -> str:
    frames = f"{crop.frames_per_video} evenly spaced frames per video"
    if crop.every_seconds:
        frames += (
            f" or, in longer videos, one every {crop.every_seconds:g} s (at most "
            f"{crop.max_frames}, spread over the video)"
        )
    frames += f", {crop.crop_size} px"
    if not crop.use_face_detection:
        return f"{frames}, whole frames (no face detection)"
    return (
        f"{frames}, {crop.face_detector} detector at {crop.detect_size} px, {crop.crop_shape} "
        f"crop with margin {crop.margin:.3g}, faces per frame: {crop.faces_per_frame or 'all'}"
    )


def _summary_table(predictions: list[VideoPrediction]) -> str:
    rows = "".join(
        f'<tr><td><a href="#video-{n}">{escape(Path(p.path).name)}</a></td>'
        f"<td>{_badge(p)}</td><td>{_probability(p.probability)}</td></tr>"
        for n, p in enumerate(predictions, start=1)
    )
    return (
        '<div class="scroll"><table><caption>All videos</caption><thead><tr>'
        '<th scope="col">Video</th><th scope="col">Verdict</th>'
        f'<th scope="col">Probability</th></tr></thead><tbody>{rows}</tbody></table></div>\n'
    )


def _probability(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _video_section(
    number: int, prediction: VideoPrediction, explainer: _Explainer | None, top_crops: int
) -> str:
    parts = [
        f'<section id="video-{number}" aria-labelledby="video-{number}-title">',
        f'<h2 id="video-{number}-title">{escape(Path(prediction.path).name)}</h2>',
        f'<p class="path">{escape(prediction.path)}</p>',
        _verdict(prediction),
    ]
    if prediction.persons:
        parts += [_persons_table(prediction), _timeline(prediction)]
    if prediction.segments:
        parts.append(_segments(prediction, explainer))
    if prediction.frames:
        parts.append(_suspicious_faces(prediction, explainer, top_crops))
    parts += [_details(prediction), "</section>\n"]
    return "\n".join(parts)


def _verdict(prediction: VideoPrediction) -> str:
    if prediction.scored:
        segments = ""
        if prediction.verdict == Verdict.UNCERTAIN:
            segments = f'\n<p class="uncertain-reason">{escape(prediction.uncertain_reason)}</p>'
        elif prediction.segments:
            segments = f'\n<p class="segments">{escape(prediction.summary)}</p>'
        return (
            f'<p class="verdict">{_badge(prediction)} fake probability '
            f"<strong>{_probability(prediction.probability)}</strong> "
            f"(threshold {prediction.threshold:.3f})</p>{segments}"
        )
    return (
        f'<p class="verdict">{_badge(prediction)} status <code>{escape(prediction.status)}</code>'
        f'</p>\n<p class="error">{escape(prediction.error or "no error message")}</p>'
    )


def _persons_table(prediction: VideoPrediction) -> str:
    rows = "".join(
        f"<tr><td>{p.face_index}</td><td>{p.probability:.3f}</td><td>{p.n_frames}</td>"
        f"<td>{'yes' if p.counted else 'no (seen in too few frames)'}</td></tr>"
        for p in prediction.persons
    )
    return (
        '<h3>People</h3>\n<p class="note">One row per face track; the video\'s probability is '
        'the highest of the counted ones.</p>\n<div class="scroll"><table>'
        "<caption>Fake probability per face</caption><thead><tr>"
        '<th scope="col">Face</th><th scope="col">Probability</th>'
        '<th scope="col">Frames</th><th scope="col">Counted</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _timeline(prediction: VideoPrediction) -> str:
    figure = Figure(figsize=(5.6, 2.4), dpi=180, layout="constrained")
    axes = figure.subplots()
    threshold = prediction.threshold
    axes.axhspan(threshold, 1.02, color="#a3001b", alpha=0.06, linewidth=0)
    for number, segment in enumerate(prediction.segments):
        axes.axvspan(
            segment.start,
            segment.end,
            color="#a3001b",
            alpha=0.18,
            linewidth=0,
            label="fake-looking" if number == 0 else None,
        )
    for person in prediction.persons:
        points = sorted(
            (f.timestamp, f.probability)
            for f in prediction.frames
            if f.face_index == person.face_index
        )
        times, probabilities = zip(*points, strict=True)
        axes.plot(
            times,
            probabilities,
            marker="o",
            markersize=3.5,
            linewidth=1.6,
            clip_on=False,
            label=f"face {person.face_index}",
        )
    axes.axhline(
        threshold,
        color="#1b1b1f",
        linestyle="--",
        linewidth=1.2,
        label=f"threshold {threshold:.2f}",
    )
    if prediction.sample_times:  # a rug under the scores: where the samples were taken
        axes.plot(
            prediction.sample_times,
            np.full(len(prediction.sample_times), RUG_Y),
            linestyle="",
            marker="|",
            markersize=6,
            color="#4a4a55",
            clip_on=False,
            label="sampled",
        )
    duration = float(prediction.video.get("duration") or 0)
    if duration > 0:
        axes.set_xlim(0, duration)
    if duration > LONG_VIDEO_S:
        axes.xaxis.set_major_formatter(FuncFormatter(lambda seconds, _: clock(seconds)))
    axes.set_ylim(RUG_Y - 0.04, 1.02)
    axes.set_yticks([0, 0.25, 0.5, 0.75, 1])
    axes.set_xlabel("time (mm:ss)" if duration > LONG_VIDEO_S else "time (s)")
    axes.set_ylabel("fake probability")
    axes.grid(alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncols=5,
        frameon=False,
        fontsize="small",
        borderaxespad=0.2,
    )
    people = "; ".join(
        f"face {p.face_index}: {p.probability:.2f} over {p.n_frames} frames"
        for p in prediction.persons
    )
    marked = (
        f" Fake-looking segments shaded: {_segment_list(prediction.segments)}."
        if prediction.segments
        else ""
    )
    alt = (
        f"Line chart of each face's fake probability against time, threshold "
        f"{threshold:.2f} dashed, {len(prediction.sample_times)} sampled times ticked on the "
        f"time axis. {people}.{marked}"
    )
    return f"<h3>Fake probability over time</h3>\n{_img(_figure_png(figure), alt, 'timeline')}"


def _segment_list(segments: list[Segment]) -> str:
    return "; ".join(f"{clock(s.start)}-{clock(s.end)} face {s.face_index}" for s in segments)


def _segments(prediction: VideoPrediction, explainer: _Explainer | None) -> str:
    """The fake-looking segments: a table, then the most suspicious face inside each."""
    rows = "".join(
        f"<tr><td>{clock(s.start)}-{clock(s.end)}</td><td>{s.start:.2f}-{s.end:.2f} s</td>"
        f"<td>{s.face_index}</td><td>{s.mean_probability:.3f}</td><td>{s.n_frames}</td></tr>"
        for s in prediction.segments
    )
    table = (
        '<h3>Fake-looking segments</h3>\n<p class="note">Stretches where a face\'s fake '
        "probability, smoothed over neighbouring samples, stays at or above the threshold; "
        "each boundary lies halfway between the last sample outside and the first inside."
        '</p>\n<div class="scroll"><table><caption>Segments</caption><thead><tr>'
        '<th scope="col">Time</th><th scope="col">Seconds</th><th scope="col">Face</th>'
        '<th scope="col">Mean probability</th><th scope="col">Samples</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )
    if prediction.crops is None or explainer is None:
        return table
    inside = [_most_suspicious_in(prediction.frames, s) for s in prediction.segments]
    chosen = [face for face in inside[:SHOWN_SEGMENTS] if face is not None]
    return f"{table}\n{_faces_with_heatmaps(prediction, explainer, chosen)}"


def _most_suspicious_in(frames: list[FrameScore], segment: Segment) -> FrameScore | None:
    """The segment's person's highest-scoring sample inside the segment."""
    inside = [
        f
        for f in frames
        if f.face_index == segment.face_index and segment.start <= f.timestamp <= segment.end
    ]
    return max(inside, key=lambda f: f.probability, default=None)


def _suspicious_faces(
    prediction: VideoPrediction, explainer: _Explainer | None, top_crops: int
) -> str:
    heading = "<h3>Most suspicious faces</h3>\n"
    if prediction.crops is None or explainer is None:
        return heading + '<p class="note">Face crops were not kept for this video.</p>'
    chosen = sorted(prediction.frames, key=lambda f: f.probability, reverse=True)[:top_crops]
    note = (
        '<p class="note">Each face as cropped for the model, and beside it its Grad-CAM '
        "heatmap: warm colours mark the regions that pushed the score towards fake.</p>"
    )
    return f"{heading}{note}\n{_faces_with_heatmaps(prediction, explainer, chosen)}"


def _faces_with_heatmaps(
    prediction: VideoPrediction, explainer: _Explainer, chosen: list[FrameScore]
) -> str:
    """A grid of the chosen faces' crops, each beside its Grad-CAM heatmap."""
    crops = prediction.crops[[f.crop_index for f in chosen]]
    figures = "".join(
        _face_figure(face, crop, overlay)
        for face, crop, overlay in zip(chosen, crops, explainer.overlays(crops), strict=True)
    )
    return f'<div class="faces">{figures}</div>'


def _face_figure(face: FrameScore, crop: np.ndarray, overlay: np.ndarray) -> str:
    where = (
        f"face {face.face_index} at {clock(face.timestamp)} ({face.timestamp:.2f} s, frame "
        f"{face.frame_index})"
    )
    return (
        f'<figure><div class="pair">{_img(_png(crop), f"Crop of {where}")}'
        f"{_img(_png(overlay), f'Grad-CAM heatmap over {where}')}</div>"
        f"<figcaption>Fake probability <strong>{face.probability:.3f}</strong>, "
        f"{escape(where)}</figcaption></figure>"
    )


def _details(prediction: VideoPrediction) -> str:
    items = {"Aggregation": f"{prediction.aggregation} of frame scores per face"}
    video = prediction.video
    if video:
        items |= {
            "Video": f"{video['width']}x{video['height']} px, {video['fps']:.5g} fps, "
            f"{video['duration']:.2f} s, {video['n_frames']} frames",
            "Rotation": f"{video['rotation']}°",
            "Frames sampled": f"{video['frames_sampled']}{_spacing(prediction.sample_times)}, "
            f"faces found in {len({f.frame_index for f in prediction.frames})}",
        }
    if prediction.timings:
        items["Timings"] = ", ".join(f"{k} {v:.2f} s" for k, v in prediction.timings.items())
    return f"<h3>Processing details</h3>\n{_definitions(items)}"


def _spacing(times: list[float]) -> str:
    """ " (one every 1.9 s)": the median time between samples."""
    return f" (one every {np.median(np.diff(times)):.3g} s)" if len(times) > 1 else ""


def _img(png: bytes, alt: str, css_class: str = "") -> str:
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    styled = f' class="{css_class}"' if css_class else ""
    return f'<img src="{source}" alt="{escape(alt)}"{styled}>'


def _png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode an image of shape {image.shape} as PNG")
    return encoded.tobytes()


def _figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# --- annotated video ---------------------------------------------------------------------------

# The annotated video is H.264, which every video container read here holds but WebM.
ANNOTATION_EXTENSIONS = VIDEO_EXTENSIONS - {".webm"}
# Box colours from real to fake (RGB); black text stays readable on each of them.
SCORE_COLOURS = np.array([(30, 190, 60), (245, 200, 0), (235, 45, 45)], np.float64)


def score_colour(probability: float) -> tuple[int, int, int]:
    """RGB on a green (real) - amber - red (fake) gradient."""
    stops = np.linspace(0, 1, len(SCORE_COLOURS))
    red, green, blue = (round(np.interp(probability, stops, c)) for c in SCORE_COLOURS.T)
    return red, green, blue


def annotate_video(prediction: VideoPrediction, output: Path, segments_only: bool = False) -> Path:
    """Write the video with each face boxed in its score's colour, with its probability;
    with `segments_only`, only the frames of its fake-looking segments, one after another.

    Boxes are known at the sampled frames only; each frame shows the boxes of the nearest
    sampled frame that had faces, within half the sampling step (so they vanish where the
    faces were lost). Written as H.264 at the video's frame rate.

    Raises:
        ReportError: the prediction has no scored faces (or no segment, with
            `segments_only`), `output` is the video itself, or its name is not a video file's.
    """
    source = Path(prediction.path)
    if not prediction.frames:
        raise ReportError(f"{source}: not scored ({prediction.status}); no face boxes to draw")
    if segments_only and not prediction.segments:
        raise ReportError(f"{source}: no fake-looking segment to write")
    if output.resolve() == source.resolve():
        raise ReportError(f"{output}: the annotated video would overwrite its source")
    if output.suffix.lower() not in ANNOTATION_EXTENSIONS:
        known = ", ".join(sorted(ANNOTATION_EXTENSIONS))
        raise ReportError(f"{output}: not a video file name for H.264; end it with one of {known}")
    indices = _segment_frames(prediction.segments) if segments_only else None
    fps = probe(source).fps
    faces_at: dict[int, list[FrameScore]] = {}
    for face in prediction.frames:
        faces_at.setdefault(face.frame_index, []).append(face)
    sampled = np.array(sorted(faces_at))
    video = prediction.video
    step = max(video["n_frames"] - 1, 1) / max(video["frames_sampled"] - 1, 1)
    reach = math.ceil(step / 2)

    def annotated() -> Iterator[np.ndarray]:
        for frame in iter_frames(source, indices):
            index, image = frame.index, frame.image
            nearest = _nearest(sampled, index)
            if abs(nearest - index) <= reach:
                _draw_faces(image, faces_at[nearest])
            yield _even_sized(image)

    return write_video(output, annotated(), fps)


def _segment_frames(segments: list[Segment]) -> list[int]:
    """The frame indices the segments cover, each once, in order."""
    return sorted({i for s in segments for i in range(s.start_frame, s.end_frame + 1)})


def _nearest(sorted_values: np.ndarray, value: int) -> int:
    at = int(np.searchsorted(sorted_values, value))
    candidates = sorted_values[max(at - 1, 0) : at + 1]
    return int(candidates[np.argmin(np.abs(candidates - value))])


def _draw_faces(image: np.ndarray, faces: Iterable[FrameScore]) -> None:
    """Draw in place: a box and a "face i: p" label above it (inside when at the top edge)."""
    side = min(image.shape[:2])
    thickness, font_scale = max(2, round(side / 240)), max(0.4, side / 900)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for face in faces:
        colour = score_colour(face.probability)
        x0, y0, x1, y1 = (round(v) for v in (face.x0, face.y0, face.x1, face.y1))
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness)
        label = f"face {face.face_index}: {face.probability:.2f}"
        (width, height), baseline = cv2.getTextSize(label, font, font_scale, 1)
        pad = thickness
        label_height = height + baseline + 2 * pad
        top = y0 - label_height if y0 >= label_height else max(y0, 0)
        left = min(max(x0, 0), max(image.shape[1] - width - 2 * pad, 0))
        cv2.rectangle(image, (left, top), (left + width + 2 * pad, top + label_height), colour, -1)
        cv2.putText(
            image,
            label,
            (left + pad, top + pad + height),
            font,
            font_scale,
            (0, 0, 0),
            max(1, thickness // 2),
            cv2.LINE_AA,
        )


def _even_sized(image: np.ndarray) -> np.ndarray:
    """Pad to even sides by repeating the edge: H.264 in yuv420p needs them."""
    bottom, right = image.shape[0] % 2, image.shape[1] % 2
    if not (bottom or right):
        return image
    return cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_REPLICATE)
