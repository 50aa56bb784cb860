"""What a person looks at after predict: Grad-CAM heatmaps, the HTML report, annotated videos."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from media import face_clip, noise_clip, set_display_rotation

from deepfake_detect.artifact import load_artifact
from deepfake_detect.inference import FrameScore, Predictor, VideoPrediction
from deepfake_detect.models import create_model, gradcam_layer, to_model_input
from deepfake_detect.report import annotate_video, gradcam, write_report
from deepfake_detect.video import probe, read_frames, write_video

ODD_NAME = 'odd <b>&" name.mp4'


@pytest.fixture(scope="module")
def predictor(tiny_model: Path) -> Predictor:
    return Predictor(tiny_model, device="cpu", frames=6)


@pytest.fixture(scope="module")
def predictions(predictor, tmp_path_factory) -> dict[str, VideoPrediction]:
    root = tmp_path_factory.mktemp("clips")
    clips = {"face": face_clip(root / ODD_NAME), "noise": noise_clip(root / "noise.mp4")}
    return {name: predictor.predict(path, keep_crops=True) for name, path in clips.items()}


def assert_heatmaps(maps: np.ndarray, shape: tuple[int, int, int]) -> None:
    assert maps.shape == shape
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(m.std() > 0 for m in maps), "a constant heatmap shows nothing"


def test_gradcam_on_meso4_gives_a_unit_range_map_per_crop_and_leaves_the_network_alone(
    predictor, predictions
):
    network, artifact = load_artifact(predictor.model_path)
    layer = gradcam_layer(network)
    crops = predictions["face"].crops[:3]
    images = torch.from_numpy(to_model_input(crops, artifact.model))
    assert_heatmaps(gradcam(network, layer, images), (3, 64, 64))
    assert not layer._forward_hooks and all(p.grad is None for p in network.parameters())
    assert not network.training


def last_vit_block_input(network: torch.nn.Module) -> torch.nn.Module:
    """A ViT's patch tokens after the last block reach the head only through the class token,
    so Grad-CAM looks at the last block's input (its first norm) instead."""
    return network.backbone.blocks[-1].norm1


@pytest.mark.parametrize(
    ("name", "size", "layer_of"),
    [("efficientnet_b0", 96, gradcam_layer), ("vit_tiny_patch16_224", 224, last_vit_block_input)],
)
def test_gradcam_on_timm_backbones(name, size, layer_of):
    torch.manual_seed(0)
    network, _ = create_model(name, pretrained=False, image_size=size)
    maps = gradcam(network, layer_of(network), torch.randn(2, 3, size, size))
    assert_heatmaps(maps, (2, size, size))
    assert network.training, "the network's mode is restored"


class Page(HTMLParser):
    """The parts of a page the tests check: tags with attributes, title, section texts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self.sections: list[str] = []
        self._inside = {"title": False, "section": False}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in self._inside:
            self._inside[tag] = True
        if tag == "section":
            self.sections.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._inside:
            self._inside[tag] = False

    def handle_data(self, data: str) -> None:
        if self._inside["title"]:
            self.title += data
        if self._inside["section"]:
            self.sections[-1] += data


def decoded_png(source: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert source.startswith(prefix), source[:40]
    data = np.frombuffer(base64.b64decode(source[len(prefix) :], validate=True), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def test_report_is_one_self_contained_page_with_a_section_per_video(
    predictor, predictions, tmp_path
):
    face, noise = predictions["face"], predictions["noise"]
    path = write_report([face, noise], predictor, tmp_path / "out" / "report.html", top_crops=2)
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert page.title.strip()
    assert len(page.sections) == 2
    assert face.verdict in page.sections[0] and f"{face.probability:.3f}" in page.sections[0]
    assert ODD_NAME in page.sections[0]  # shown as text, not parsed as markup
    assert "&lt;b&gt;&amp;&quot;" in text and "b" not in {tag for tag, _ in page.tags}
    assert "could not score" in page.sections[1] and "no_face" in page.sections[1]
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 1 + 2 * 2  # the timeline, then two crops each with its heatmap
    for attrs in images:
        assert attrs["alt"] and decoded_png(attrs["src"]).size > 0
    assert not {"script", "link", "iframe"} & {tag for tag, _ in page.tags}
    assert "http://" not in text and "https://" not in text


def test_annotated_video_keeps_every_frame_and_boxes_the_face(predictions, tmp_path):
    prediction = predictions["face"]
    output = annotate_video(prediction, tmp_path / "annotated.mp4")
    _, original = read_frames(Path(prediction.path), sampling_rate=1)
    _, annotated = read_frames(output, sampling_rate=1)
    assert len(annotated) == len(original)
    assert annotated[0].image.shape == original[0].image.shape
    face = prediction.frames[0]
    top_edge = np.s_[round(face.y0) - 1 : round(face.y0) + 2, round(face.x0) : round(face.x1)]
    before = original[face.frame_index].image[top_edge].astype(int)
    after = annotated[face.frame_index].image[top_edge].astype(int)
    assert np.abs(after - before).mean() > 30


def test_annotating_an_unscored_video_names_it(predictions, tmp_path):
    with pytest.raises(ValueError, match=r"noise\.mp4: not scored \(no_face\)"):
        annotate_video(predictions["noise"], tmp_path / "annotated.mp4")


def grey_clip(path: Path, width: int, height: int, codec: str = "libx264") -> Path:
    return write_video(path, [np.full((height, width, 3), 128, np.uint8)] * 8, 10, codec)


def boxed(path: Path, box: tuple[float, float, float, float]) -> VideoPrediction:
    """A prediction with the same box (upright pixels) on each of the clip's 8 frames."""
    frames = [FrameScore(i, i, i / 10, 0, 0.9, *box) for i in range(8)]
    return VideoPrediction(str(path), "ok", probability=0.9, verdict="FAKE", frames=frames,
                           video={"n_frames": 8, "frames_sampled": 8})  # fmt: skip


def test_annotated_video_is_upright_and_even_sized(tmp_path):
    rotated = set_display_rotation(grey_clip(tmp_path / "portrait.mp4", 96, 64), 90)
    info = probe(rotated)
    assert (info.width, info.height) == (64, 96)
    output = annotate_video(boxed(rotated, (8, 40, 40, 80)), tmp_path / "upright.mp4")
    _, frames = read_frames(output, sampling_rate=1)
    assert len(frames) == 8 and frames[0].image.shape == (96, 64, 3)
    left_edge = frames[0].image[50:70, 7:10].astype(int)
    assert np.abs(left_edge - 128).mean() > 30  # drawn where the upright box is
    odd = grey_clip(tmp_path / "odd.mkv", 95, 63, codec="ffv1")
    _, frames = read_frames(annotate_video(boxed(odd, (10, 10, 40, 40)), tmp_path / "odd.mp4"))
    assert frames[0].image.shape == (64, 96, 3)  # padded: H.264 needs even sides
