"""What the supported public datasets hold as published: contents, size, terms, how to request
them, and the official video counts `datasets check` compares a download with.

Facts only (nothing is downloaded). The counts are those of the datasets' own papers and
download scripts.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
FFPP_VIDEOS_PER_SOURCE = 1000
# The DeepFakeDetection (DFD) release the FF++ download script also fetches: optional.
FFPP_DFD_COUNTS = {
    "original_sequences/actors": 363,
    "manipulated_sequences/DeepFakeDetection": 3068,
}
FFPP_SPLIT_VIDEOS = {"train": 720, "val": 140, "test": 140}
CELEBDF_V2_COUNTS = {"Celeb-real": 590, "YouTube-real": 300, "Celeb-synthesis": 5639}
CELEBDF_V2_TEST_VIDEOS = 518
DFDC_PARTS = 50
DFDC_PART_NAME = "dfdc_train_part_{}"
DFDC_TRAIN_VIDEOS = 119_154


@dataclass(frozen=True)
class DatasetInfo:
    """One public dataset as its publishers describe it.

    Attributes:
        format: the stage-1 adapter that reads it (`dataset_layouts.ADAPTERS`).
        name: its usual name.
        holds: what it contains, in one line.
        size: its download size.
        terms: its terms of use, in one line.
        request: where and how to ask for it.
    """

    format: str
    name: str
    holds: str
    size: str
    terms: str
    request: str


CATALOG: dict[str, DatasetInfo] = {
    "ffpp": DatasetInfo(
        format="ffpp",
        name="FaceForensics++",
        holds=(
            "1,000 YouTube originals and 1,000 fakes for each of Deepfakes, Face2Face, FaceSwap, "
            "NeuralTextures and FaceShifter, at raw, c23 and c40 compression; official splits "
            "of 720/140/140 videos; optionally DeepFakeDetection (363 originals, 3,068 fakes)"
        ),
        size="about 10 GB at c23, 2 GB at c40, 500 GB raw (videos only)",
        terms="research use only, under the FaceForensics terms of use; no redistribution",
        request=(
            "fill in the request form linked from github.com/ondyari/FaceForensics; the "
            "download script you receive fetches each method and compression (-c c23)"
        ),
    ),
    "celebdf": DatasetInfo(
        format="celebdf",
        name="Celeb-DF v2",
        holds=(
            "590 celebrity and 300 YouTube real videos, 5,639 synthesised videos, and "
            "List_of_testing_videos.txt, a 518-video test list"
        ),
        size="about 10 GB",
        terms="research use only, under the Celeb-DF terms of use; no redistribution",
        request=(
            "fill in the request form linked from github.com/yuezunli/celeb-deepfakeforensics; "
            "a download link is sent by e-mail"
        ),
    ),
    "dfdc": DatasetInfo(
        format="dfdc",
        name="DFDC (Deepfake Detection Challenge)",
        holds=(
            f"{DFDC_TRAIN_VIDEOS:,} training videos in {DFDC_PARTS} parts "
            "(dfdc_train_part_0 to _49), each with a metadata.json of label and original"
        ),
        size="about 470 GB (50 zip files of about 10 GB)",
        terms="non-commercial research use, under the DFDC dataset licence agreement",
        request=(
            "accept the competition rules on kaggle.com/c/deepfake-detection-challenge/data, "
            "or request it from ai.meta.com/datasets/dfdc"
        ),
    ),
}


def catalog_table() -> Table:
    """`datasets list`: one row per dataset with what it holds, size, terms and how to get it."""
    table = Table(title="supported datasets (nothing is downloaded: request each from its owners)")
    for column in ("format", "dataset", "holds", "size", "terms", "how to get it"):
        table.add_column(column, overflow="fold")
    for info in CATALOG.values():
        table.add_row(info.format, info.name, info.holds, info.size, info.terms, info.request)
    return table
