"""Stage 2: train a detector on stage-1 crops with Lightning, and export the model artifact.

Flow: `run_training(config)` verifies the data, builds the network (models.py), the data module
(training_data.py) and the LightningModule below, fits with checkpoints, early stopping and a target
AUC, then calibrates on validation and writes the artifact (artifact.py). Every video-level figure
(validation metrics, checkpoint choice, temperature, threshold, uncertain band) scores a video
from its crops with the one rule of scoring.py, the rule the artifact records for predict.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
import yaml
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from rich.console import Console
from rich.table import Table
from scipy.special import expit
from torch.utils.data import DataLoader

from deepfake_detect.artifact import ModelArtifact, library_versions, save_artifact
from deepfake_detect.calibration import calibrate, fit_video_temperature, video_log_loss
from deepfake_detect.crops import CropConfig, CropSettingsError
from deepfake_detect.metrics import binary_metrics, brier_score, expected_calibration_error
from deepfake_detect.models import ModelConfig, create_model
from deepfake_detect.scoring import VideoCrops, read_tracks
from deepfake_detect.train_config import (
    MONITOR,
    MONITORS,
    SELECTION_LOSS_WEIGHT,
    VIDEO_AUC,
    TrainConfig,
    TrainError,
)
from deepfake_detect.training_data import (
    CropDataset,
    DataError,
    EpochSampler,
    VideoTable,
    build_augmentation,
    evaluation_keys,
    read_metadata,
    select_split,
    verify,
)

# Each validation video's calibrated score under the rule, as the artifact's fit saw it.
VAL_SCORES_FILE = "val_videos.csv"


class DeepfakeClassifier(L.LightningModule):
    """The network, its loss (BCE on one logit), AdamW with warmup + cosine, and the metrics.

    Validation keeps every crop's logit so video-level metrics (each video scored from its
    crops by the data module's rule) can be computed at the end of the epoch.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        model_config: ModelConfig,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1.0,
    ) -> None:
        super().__init__()
        self.network = network
        self.save_hyperparameters(
            {
                "model": model_config.to_dict(),
                "lr": lr,
                "weight_decay": weight_decay,
                "warmup_epochs": warmup_epochs,
            }
        )
        self.loss = torch.nn.BCEWithLogitsLoss()
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def training_step(self, batch: tuple, batch_index: int) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        loss = self.loss(self(images), labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple, batch_index: int) -> None:
        images, labels, videos, crops = batch
        logits = self(images).float()
        self._val_outputs.append((logits.detach(), labels, videos, crops))

    def on_validation_epoch_end(self) -> None:
        parts = (torch.cat(part) for part in zip(*self._val_outputs, strict=True))
        self._val_outputs.clear()
        # every rank scored its own share of the videos: metrics over all of them, not averages
        logits, labels, videos, crops = (gather_uneven(self, t) for t in parts)
        loss = self.loss(logits, labels)
        video_crops = self.trainer.datamodule.val_video_crops(
            videos.cpu().numpy(), crops.cpu().numpy(), labels.cpu().numpy()
        )
        metrics = epoch_metrics(labels.cpu().numpy(), logits.cpu().numpy(), video_crops)
        selection = metrics.pop("selection")
        self.log_dict({"val_loss": loss} | {f"val_{k}": v for k, v in metrics.items()})
        self.log(MONITOR, selection, prog_bar=True)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // max(1, self.trainer.max_epochs))
        warmup = min(total - 1, round(self.hparams.warmup_epochs * per_epoch))

        def warmup_then_cosine(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def gather_uneven(module: L.LightningModule, tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor of every rank (lengths may differ), in rank order."""
    world = module.trainer.world_size if module._trainer is not None else 1
    if world == 1:
        return tensor
    sizes = module.all_gather(torch.tensor(len(tensor), device=tensor.device)).reshape(-1)
    padded = tensor.new_zeros(int(sizes.max()))
    padded[: len(tensor)] = tensor
    gathered = module.all_gather(padded).reshape(world, -1)
    return torch.cat([gathered[rank, : int(size)] for rank, size in enumerate(sizes)])


def epoch_metrics(labels: np.ndarray, logits: np.ndarray, videos: VideoCrops) -> dict[str, float]:
    """Frame AUC; video AUC, EER, AP, accuracy and log loss (each video scored from its crops
    under the rule); the video log loss after fitting a temperature; and the selection score
    (video AUC minus SELECTION_LOSS_WEIGHT times that calibrated loss)."""
    frame = binary_metrics(labels, expit(logits))
    video = binary_metrics(videos.labels, videos.scores(expit(logits)))
    calibrated = fit_video_temperature(videos, logits).log_loss
    auc = video["auc"] if math.isfinite(video["auc"]) else 0.0
    return {
        "frame_auc": frame["auc"],
        "video_auc": video["auc"],
        "eer": video["eer"],
        "ap": video["ap"],
        "accuracy": video["accuracy"],
        "log_loss": video["log_loss"],
        "calibrated_log_loss": calibrated,
        "selection": auc - SELECTION_LOSS_WEIGHT * calibrated,
    }


class StopAtTargetAUC(Callback):
    """Stop as soon as validation video AUC reaches the target."""

    def __init__(self, target: float) -> None:
        self.target = target

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(VIDEO_AUC)
        if value is not None and float(value) >= self.target:
            trainer.should_stop = True


HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_frame_auc",
    VIDEO_AUC,
    "val_eer",
    "val_ap",
    "val_accuracy",
    "val_log_loss",
    "val_calibrated_log_loss",
    MONITOR,
]


class EpochHistory(Callback):
    """Append each epoch's metrics to history.csv; unlike Lightning's CSV log, it survives a
    resume (an epoch run again after a kill keeps its last row)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch} | {
            name: float(metrics[name]) for name in HISTORY_COLUMNS[1:] if name in metrics
        }
        frame = pd.DataFrame([row], columns=HISTORY_COLUMNS)
        frame.to_csv(self.path, mode="a", header=not self.path.exists(), index=False)


def read_history(output_dir: Path) -> pd.DataFrame:
    """One row per epoch from history.csv (the latest row of an epoch that was run twice)."""
    path = output_dir / "history.csv"
    if not path.is_file():
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    history = pd.read_csv(path).drop_duplicates("epoch", keep="last")
    return history.sort_values("epoch").reset_index(drop=True)


class RandomStateCheckpoint(Callback):
    """Save and restore the Python, NumPy and torch random states with each checkpoint, so a
    resumed run draws the same dropout masks and loader seeds as an uninterrupted one."""

    def state_dict(self) -> dict[str, Any]:
        numpy_state = np.random.get_state()
        python_state = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "numpy_pos": int(numpy_state[2]),
            "python": torch.tensor(python_state[1], dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        keys = state["numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
        random.setstate((3, tuple(int(x) for x in state["python"]), None))


class CropDataModule(L.LightningDataModule):
    """Train and validation loaders over stage-1 crops, with the model's normalisation.

    Under DDP each rank's loaders hold its own share: the training sampler deals each epoch's
    videos out to the ranks, and validation's videos are split between them (whole videos,
    no padding) for the module to gather.
    """

    def __init__(
        self, train: VideoTable, val: VideoTable, model_config: ModelConfig, config: TrainConfig
    ) -> None:
        super().__init__()
        self.train_table, self.val_table = train, val
        self.model_config, self.config = model_config, config
        tracks = read_tracks(val.root / "crops.csv")
        self._val_tracks = [
            tracks.of(str(video_id), int(n))
            for video_id, n in zip(val.rows.video_id, val.crop_counts, strict=True)
        ]

    def val_video_crops(
        self, videos: np.ndarray, crops: np.ndarray, labels: np.ndarray
    ) -> VideoCrops:
        """Validation crops (video and crop index of each) grouped by video, with their persons
        and frames from stage 1's crops.csv, under the run's rule."""
        faces = [self._val_tracks[v][0][c] for v, c in zip(videos, crops, strict=True)]
        frames = [self._val_tracks[v][1][c] for v, c in zip(videos, crops, strict=True)]
        return VideoCrops.of(list(videos), labels, faces, frames, self.config.aggregation)

    def train_dataloader(self) -> DataLoader:
        dataset = CropDataset(
            self.train_table, self.model_config, build_augmentation(self.config.augment)
        )
        replicas, rank = self._rank()
        sampler = EpochSampler(
            self.train_table.labels,
            self.train_table.crop_counts,
            self.config.crops_per_video,
            balance=self.config.balance,
            self_blend=self.config.self_blend,
            seed=self.config.seed,
            num_replicas=replicas,
            rank=rank,
        )
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._val_loader(*self._rank())

    def full_val_dataloader(self) -> DataLoader:
        """Validation crops of every video, whatever the rank (to calibrate the artifact)."""
        return self._val_loader(1, 0)

    def _val_loader(self, replicas: int, rank: int) -> DataLoader:
        """Validation crops of every `replicas`-th video from `rank`."""
        if len(self.val_table.rows) < replicas:  # a rank with nothing would stall the others
            raise TrainError(
                f"validation has {len(self.val_table.rows)} videos, fewer than the {replicas} "
                "DDP ranks: give each rank at least one"
            )
        keys = evaluation_keys(self.val_table, self.config.val_crops_per_video)
        mine = {v for v in range(len(self.val_table.rows)) if v % replicas == rank}
        return self._loader(
            CropDataset(self.val_table, self.model_config), [k for k in keys if k.video in mine]
        )

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, dataset: CropDataset, sampler: Any) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )


def load_tables(config: TrainConfig) -> tuple[VideoTable, VideoTable, Path]:
    """Train and val tables: two folders, or one folder and its split column. With
    `real_only`, training keeps its real videos only (Self-Blended Images: the self-blends
    are the fakes, so the model cannot learn the people or the fakes' other traits)."""
    train_table, train_root = read_metadata(config.train)
    same = config.val is None or config.val.resolve() == config.train.resolve()
    if same:
        train = select_split(train_table, train_root, "train")
        val = select_split(train_table, train_root, "val")
    else:
        val_table, val_root = read_metadata(config.val)
        train = select_split(train_table, train_root, None)
        val = select_split(val_table, val_root, None)
    if config.real_only:
        train = VideoTable(train.rows[train.rows.label == 0].reset_index(drop=True), train.root)
    return train, val, train_root


def _checkpoint_path(config: TrainConfig) -> Path | None:
    if config.resume_checkpoint is None:
        return None
    if config.resume_checkpoint == "last":
        path = config.output_dir / "checkpoints" / "last.ckpt"
    else:
        path = Path(config.resume_checkpoint)
    if not path.is_file():
        raise TrainError(f"{path}: checkpoint not found")
    return path


def check_checkpoint(path: Path, model_config: ModelConfig) -> None:
    """Refuse a checkpoint of another architecture before Lightning tries to load it."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TrainError(
            f"{path}: not a readable training checkpoint ({type(error).__name__})"
        ) from None
    saved_model = saved.get("hyper_parameters", {}).get("model", {})
    wanted = model_config.to_dict()
    if (
        saved_model.get("name") != wanted["name"]
        or saved_model.get("input_size") != wanted["input_size"]
    ):
        raise TrainError(
            f"{path}: checkpoint of {saved_model.get('name')} at "
            f"{saved_model.get('input_size')} px, but this run trains {wanted['name']} at "
            f"{wanted['input_size']} px"
        )


def _prepare_output_dir(config: TrainConfig) -> None:
    """Create the run folder and save the effective config; a fresh run forgets old history."""
    try:
        (config.output_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        if config.resume_checkpoint is None:
            (config.output_dir / "history.csv").unlink(missing_ok=True)
        (config.output_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    except OSError as error:
        raise TrainError(
            f"{config.output_dir}: cannot write output folder ({error.strerror})"
        ) from None


def _precision(config: TrainConfig) -> str:
    if config.precision:
        return config.precision
    return "16-mixed" if torch.cuda.is_available() and config.accelerator != "cpu" else "32-true"


def build_trainer(config: TrainConfig) -> L.Trainer:
    checkpoints = config.output_dir / "checkpoints"
    mode = MONITORS[config.monitor]
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="best",
            monitor=config.monitor,
            mode=mode,
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=True,
        ),
        # Lightning's save_last only follows new bests: a second callback keeps every epoch's end
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=True,
        ),
        EarlyStopping(
            monitor=config.monitor, mode=mode, patience=config.patience, check_finite=False
        ),
        RandomStateCheckpoint(),
        EpochHistory(config.output_dir / "history.csv"),
    ]
    if config.target_auc is not None:
        callbacks.append(StopAtTargetAUC(config.target_auc))
    loggers = [
        CSVLogger(config.output_dir, name="logs", version=""),
        TensorBoardLogger(config.output_dir, name="logs", version="", default_hp_metric=False),
    ]
    return L.Trainer(
        **step_settings(config),
        default_root_dir=config.output_dir,
        max_epochs=config.max_epochs,
        max_time=None if config.max_minutes is None else timedelta(minutes=config.max_minutes),
        num_nodes=config.num_nodes,
        callbacks=callbacks,
        logger=loggers,
        log_every_n_steps=1,
        enable_progress_bar=config.progress,
    )


def step_settings(config: TrainConfig) -> dict[str, Any]:
    """The Trainer arguments that decide how a training step runs (and so its speed); shared
    with bench/train.py so that it times the steps a run takes."""
    return {
        "accelerator": config.accelerator,
        "devices": config.devices,
        "strategy": config.strategy,
        "use_distributed_sampler": False,  # the samplers shard
        "precision": _precision(config),
        "gradient_clip_val": config.gradient_clip or None,
        "deterministic": "warn",
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,
    }


@dataclass
class TrainResult:
    """What a run wrote; `metrics` (the artifact's validation video metrics) is empty on
    ranks other than 0 of a DDP run."""

    artifact_dir: Path
    metrics: dict[str, float]
    history: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def run_training(config: TrainConfig, console: Console | None = None) -> TrainResult:
    """Verify the data, fit, choose the best epoch on validation, export the model artifact."""
    console = console or Console(stderr=True)
    main_rank = rank_zero_only.rank == 0  # under DDP every rank runs this; one writes
    if not config.progress:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    train_table, val_table, train_root = load_tables(config)
    try:
        crop_config = CropConfig.read(train_root)
    except CropSettingsError as error:
        raise DataError(str(error)) from None
    summary, problems = verify(
        train_table,
        val_table,
        allow_leakage=config.allow_leakage,
        real_only_ok=config.self_blend > 0,
    )
    if config.progress and main_rank:
        console.print(_table("training data", summary))
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the training data: " + " | ".join(problems))
    L.seed_everything(config.seed, workers=True, verbose=False)
    network, model_config = create_model(
        config.model,
        pretrained=config.pretrained,
        image_size=config.image_size,
        drop_rate=config.drop_rate,
    )
    checkpoint = _checkpoint_path(config)
    if checkpoint is not None:
        check_checkpoint(checkpoint, model_config)
    if main_rank:
        _prepare_output_dir(config)
    module = DeepfakeClassifier(
        network, model_config, config.lr, config.weight_decay, config.warmup_epochs
    )
    data = CropDataModule(train_table, val_table, model_config, config)
    trainer = build_trainer(config)
    trainer.fit(module, datamodule=data, ckpt_path=checkpoint, weights_only=True)
    history = read_history(config.output_dir)
    if not trainer.is_global_zero:  # checkpoints, history and the artifact are rank 0's
        return TrainResult(config.output_dir / "model", {}, history)
    if config.progress and not history.empty:
        console.print(_table("epochs", history))
    best = Path(
        trainer.checkpoint_callback.best_model_path
        or config.output_dir / "checkpoints" / "last.ckpt"
    )
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    result = write_model_artifact(module, model_config, data, config, crop_config)
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    return result


def predict_logits(module: DeepfakeClassifier, loader: DataLoader) -> tuple[np.ndarray, ...]:
    """Frame logits, labels, video and crop indices of a loader, in eval mode without
    gradients."""
    module.eval()
    parts = []
    with torch.no_grad():
        for images, labels, videos, crops in loader:
            parts.append((module(images.to(module.device)).float().cpu(), labels, videos, crops))
    logits, labels, videos, crops = (torch.cat(p).numpy() for p in zip(*parts, strict=True))
    return logits, labels, videos, crops


def write_model_artifact(
    module: DeepfakeClassifier,
    model_config: ModelConfig,
    data: CropDataModule,
    config: TrainConfig,
    crop_config: CropConfig,
) -> TrainResult:
    """Fit the temperature, threshold and uncertain band on validation videos under the run's
    rule and write the model artifact (with the stage-1 settings the crops were made with, so
    predict crops faces the same way, and the rule, so predict scores videos the same way)."""
    logits, labels, videos, crops = predict_logits(module, data.full_val_dataloader())
    video_crops = data.val_video_crops(videos, crops, labels)
    fitted = calibrate(video_crops, logits)
    threshold = fitted.threshold
    video_labels, video_probabilities = video_crops.labels, fitted.video_probabilities
    metrics = {
        "frame": binary_metrics(labels, expit(logits / fitted.temperature), threshold),
        "video": binary_metrics(video_labels, video_probabilities, threshold)
        | {
            "ece": expected_calibration_error(video_labels, video_probabilities),
            "brier": brier_score(video_labels, video_probabilities),
            "log_loss_uncalibrated": video_log_loss(
                video_labels, video_crops.scores(expit(logits))
            ),
        },
    }
    artifact = ModelArtifact(
        model=model_config,
        preprocessing=crop_config,
        threshold=threshold,
        temperature=fitted.temperature,
        aggregation=config.aggregation,
        uncertain_band=fitted.uncertain_band,
        warnings=fitted.warnings,
        metrics={"val": metrics},
        training={k: v for k, v in yaml.safe_load(config.to_yaml()).items() if k != "progress"},
        versions=library_versions(),
    )
    directory = config.output_dir / "model"
    save_artifact(directory, module.network, artifact)
    video_ids = data.val_table.rows.video_id.to_numpy()[np.asarray(video_crops.video_ids, int)]
    pd.DataFrame(
        {"video_id": video_ids, "label": video_labels, "probability": video_probabilities}
    ).to_csv(config.output_dir / VAL_SCORES_FILE, index=False)
    return TrainResult(
        directory, metrics["video"], read_history(config.output_dir), fitted.warnings
    )


def _table(title: str, frame: pd.DataFrame) -> Table:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    return table
