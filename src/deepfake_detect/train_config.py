"""Every option of a training run, with its default and help: the single home of both, read by
`train` (its CLI options are built from these fields), `--config train.yaml` and the Python API.

Kept apart from training.py so that the CLI can read it without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from deepfake_detect.errors import DeepfakeDetectError
from deepfake_detect.schema import setting

VIDEO_AUC = "val_video_auc"
# The default choice of the best epoch: video AUC, ties broken by the video log loss after
# calibration (a temperature fitted on validation), which does not reward overconfidence as
# the raw loss's rise does not penalise it. The loss term is below 0.01 * ln 2, less than
# one AUC step of any validation set under 70 x 70 videos.
MONITOR = "val_selection"
# scoring.known_rules(), written out: importing scoring (and so scikit-learn) here would slow
# every command's start-up, --help included; a test keeps the two the same
RULES = (
    "mean, median, max, vote, confident, dfdc_confident, logit_mean; "
    "or max_face_mean over each frame's faces"
)
SELECTION_LOSS_WEIGHT = 0.01
# What can choose the best epoch and stop early, and which way is better.
MONITORS = {
    "val_selection": "max",
    "val_video_auc": "max",
    "val_frame_auc": "max",
    "val_ap": "max",
    "val_loss": "min",
    "val_log_loss": "min",
    "val_calibrated_log_loss": "min",
}


def _known_rule(rule: str) -> bool:
    # Imported here: scoring pulls in scikit-learn, which the CLI's start-up need not pay.
    from deepfake_detect.scoring import check_rule

    try:
        check_rule(rule)
    except ValueError:
        return False
    return True


class TrainError(DeepfakeDetectError, ValueError):
    """A training run that cannot start; one clear message."""


@dataclass
class TrainConfig:
    """Every option of a training run (the CLI flags and the keys of --config train.yaml)."""

    train: Path = setting(None, "Preprocessed folder (or its metadata.csv) to train on.")
    output_dir: Path = setting(None, "Run folder.")
    val: Path | None = setting(None, "Validation folder; default: --train's rows with split val.")
    resume_checkpoint: str | None = setting(
        None, "A .ckpt to resume, or 'last' for this run's own."
    )
    model: str = setting("meso4", "meso4, mesoinception4 or any timm name (efficientnet_b0...).")
    pretrained: bool = setting(False, "Start from pretrained weights (timm; needs the network).")
    image_size: int | None = setting(None, "Input size [default: the model's].")
    drop_rate: float = setting(0.5, "Dropout.")
    augment: str = setting("light", "Augmentation preset: none, light, strong.")
    self_blend: float = setting(0.0, "Share of pseudo-fakes self-blended from reals.")
    real_only: bool = setting(
        False, "Train on the real videos only; the self-blends are the fakes (needs --self-blend)."
    )
    balance: bool = setting(True, "Balance classes by resampling videos.")
    batch_size: int = setting(32, "Crops per training step.")
    crops_per_video: int = setting(8, "Crops drawn per video per epoch.")
    val_crops_per_video: int = setting(16, "Crops per video scored in validation.")
    lr: float = setting(1e-3, "Peak learning rate (AdamW).")
    weight_decay: float = setting(1e-4, "AdamW weight decay.")
    warmup_epochs: float = setting(1.0, "Epochs of linear warmup before the cosine decay.")
    max_epochs: int = setting(30, "At most this many epochs.")
    max_minutes: float | None = setting(None, "Stop training after this much time.")
    patience: int = setting(5, "Epochs without a better monitored value before stopping.")
    monitor: str = setting(
        MONITOR, f"Chooses the best epoch and stops early: {', '.join(MONITORS)}."
    )
    aggregation: str = setting("mean", f"The video rule, over each face track's crops: {RULES}.")
    target_auc: float | None = setting(None, "Stop once val video AUC reaches it.")
    num_workers: int = setting(0, "Data loader processes.")
    accelerator: str = setting("auto", "Lightning accelerator: auto, cpu, gpu.")
    devices: str = setting("auto", "Lightning devices: auto, 1, 4, ...")
    strategy: str = setting("auto", "Lightning strategy: auto, ddp, ...")
    num_nodes: int = setting(1, "Machines in a multi-node run (under torchrun or SLURM).")
    precision: str | None = setting(
        None, "Lightning precision [default: 16-mixed on GPU, else 32]."
    )
    gradient_clip: float = setting(1.0, "Clip gradients to this norm.")
    seed: int = setting(0, "Seed of sampling, augmentation and initialisation.")
    allow_leakage: bool = setting(False, "Train even when groups are in both train and val.")
    progress: bool = setting(True, "Progress bars and tables.")

    def __post_init__(self) -> None:
        if self.train is None or self.output_dir is None:
            raise TrainError("give --train and --output-dir (or a --config that sets them)")
        for name in ("train", "output_dir", "val"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        checks = [
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.crops_per_video >= 1, "crops_per_video must be at least 1"),
            (self.max_epochs >= 1, "max_epochs must be at least 1"),
            (self.num_nodes >= 1, "num_nodes must be at least 1"),
            (self.max_minutes is None or self.max_minutes > 0, "max_minutes must be positive"),
            (0 <= self.self_blend < 1, "self_blend must be in [0, 1)"),
            (
                not self.real_only or self.self_blend > 0,
                "real_only needs self_blend > 0: the self-blends are its only fakes",
            ),
            (self.lr > 0, "lr must be positive"),
            (self.monitor in MONITORS, f"monitor must be one of {', '.join(MONITORS)}"),
            (
                _known_rule(self.aggregation),
                f"aggregation {self.aggregation!r} is not a rule that scoring.py knows",
            ),
            (self.target_auc is None or 0 < self.target_auc <= 1, "target_auc must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainError(message)

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> TrainConfig:
        """Options from a YAML file, then `overrides` on top; unknown keys are refused."""
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise TrainError(
                f"{path}: cannot read config ({' '.join(str(error).split())})"
            ) from None
        if not isinstance(loaded, dict):
            raise TrainError(f"{path}: a config is a mapping of option: value")
        loaded = {k.replace("-", "_"): v for k, v in loaded.items()}
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(loaded) - known):
            raise TrainError(f"{path}: unknown options {unknown}; known: {sorted(known)}")
        return cls(**(loaded | overrides))

    def to_yaml(self) -> str:
        plain = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        return yaml.safe_dump(plain, sort_keys=False)
