"""What one process of a training run holds, in one explicit object: :class:`TrainingState`.

The job (:class:`TrainingJob`) is what every process is given; the state is what a process builds from
it (:func:`fusemycell.training.setup.start`) and what the steps of :mod:`fusemycell.training.steps` and
:mod:`fusemycell.training.engine` read and change. Nothing about a run lives anywhere else, so each
step can be run, and tested, on a state alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusemycell.devices import CpuThreads, Precision
from fusemycell.memory import MemoryPeak
from fusemycell.models.card import ModelCard
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.unet import UNet3D
from fusemycell.patching.config import AugmentationParams
from fusemycell.patching.torch_dataset import PatchDataset
from fusemycell.training.budget import BudgetPlan, TimeBudget
from fusemycell.training.checkpoint import EpochMetrics
from fusemycell.training.config import TrainingConfig
from fusemycell.training.physics import SingleViewForwardModel
from fusemycell.training.schedule import CosineSchedule
from fusemycell.training.validation_volumes import VolumeValidation

LAST_CHECKPOINT = "last.pt"
BEST_MODEL = "best.pt"


@dataclass(frozen=True)
class TrainingJob:
    """What every process of one training run is given (picklable, for spawned workers)."""

    config: TrainingConfig
    train_store: str
    val_store: str
    augmentation: AugmentationParams | None = None
    epoch_callback: Callable[[EpochMetrics], None] | None = None
    card: ModelCard | None = None
    volumes: VolumeValidation | None = None
    world_size: int = 1
    launched: bool = False


@dataclass
class TrainingResult:
    """The best model and how training went."""

    model: TrainedModel
    history: list[EpochMetrics]
    best_epoch: int
    stopped_early: bool
    physics: dict[str, float] = field(default_factory=dict)
    ended_by: str = "epochs"
    """What ended training: ``epochs`` (all asked for), ``budget`` (the time budget) or ``early stopping``."""


class FusionModel(nn.Module):
    """The U-Net and, for the physics-informed loss, the single-view forward model (one DDP unit)."""

    def __init__(self, unet: UNet3D, physics: SingleViewForwardModel | None = None):
        super().__init__()
        self.unet = unet
        self.physics = physics

    def forward(self, single_view: torch.Tensor, geometry: torch.Tensor | None = None):
        prediction = self.unet(single_view)
        if self.physics is None or geometry is None:
            return prediction, None
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            return prediction, self.physics(prediction.float(), geometry)


def last_checkpoint_path(config: TrainingConfig) -> Path:
    """Where every epoch's checkpoint is written (and a resumed run reads it)."""
    return Path(config.checkpoint_dir) / LAST_CHECKPOINT


def unet_config_for(config: TrainingConfig, spacing_zyx: tuple[float, float, float]) -> UNetConfig:
    """The network's configuration: the training parameters' architecture at the data's voxel size."""
    return config.model.model_copy(update={"spacing_zyx": tuple(float(s) for s in spacing_zyx)})


@dataclass
class BestEpoch:
    """The best epoch so far by the monitored quantity, and its weights."""

    higher_is_better: bool
    score: float
    epoch: int = 0
    bad_epochs: int = 0
    state: dict[str, torch.Tensor] | None = None

    monitor: str = "val_volume_nssim"

    @classmethod
    def none_yet(cls, monitor: str) -> BestEpoch:
        """Before the first epoch: any score improves (``val_loss`` is minimised, the rest maximised)."""
        higher = monitor != "val_loss"
        return cls(higher, -float("inf") if higher else float("inf"), monitor=monitor)

    def update(self, metrics: EpochMetrics, network: nn.Module) -> bool:
        """Record ``metrics``' epoch if it improves (or is the first scored); True when it does.

        An epoch the monitored quantity was not measured on (under a time budget, whole volumes are not
        validated every epoch) neither improves nor counts as an epoch without improvement.
        """
        score = float(getattr(metrics, self.monitor))
        if math.isnan(score):
            return False
        improved = score > self.score if self.higher_is_better else score < self.score
        if improved or self.epoch == 0:
            self.score, self.epoch, self.bad_epochs = score, metrics.epoch, 0
            self.state = copy.deepcopy(network.state_dict())
            return True
        self.bad_epochs += 1
        return False


@dataclass
class TrainingState:
    """Everything one process of a training run holds: what it computes with, and where the run stands.

    Built complete by :func:`fusemycell.training.setup.start`; the first group never changes after,
    the second is what the steps update (and a checkpoint records).
    """

    job: TrainingJob
    rank: int
    device: torch.device
    precision: Precision
    train_data: PatchDataset
    val_data: Any
    """The validation patches (a ``Subset`` with ``max_val_patches``)."""
    card: ModelCard
    """The card the saved model carries (validation, physics and the training summary filled in)."""
    model: FusionModel
    wrapped: nn.Module | None
    """The model as the training step calls it: DDP's wrapper in a distributed run (None once torn down)."""
    optimizer: torch.optim.Optimizer
    schedule: CosineSchedule
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    """Optimizer steps of a whole epoch on this rank."""
    memory: MemoryPeak
    best: BestEpoch
    history: list[EpochMetrics] = field(default_factory=list)
    """Every epoch's metrics, those restored from a checkpoint included."""
    start_epoch: int = 1
    """The first epoch this process trains (after a checkpoint's last)."""
    planned_epochs: int = 1
    """The epochs the run will end with (``epochs``, or fewer with a time budget)."""
    budget: TimeBudget | None = None
    """With ``budget_minutes``: its clock and what it measured."""
    plan: BudgetPlan | None = None
    """With a time budget: rank 0's plan, which every rank follows (None before the first)."""
    budget_ended: bool = False
    """The time budget ended training (in the middle of the last epoch, or at its end)."""
    patch_voxels: int = 0
    """Voxels of the validation patches (what one validation on patches predicts)."""
    volume_voxels: int = 0
    """Voxels of the whole validation volumes' blocks (what one whole-volume validation predicts)."""
    threads: CpuThreads | None = None
    """On a CPU: torch's threads, sized to the CPUs this process may really use."""
    stopped_early: bool = False

    @property
    def config(self) -> TrainingConfig:
        """The training parameters."""
        return self.job.config

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process trains."""
        return self.job.world_size > 1

    @property
    def last_path(self) -> Path:
        """The epoch's checkpoint."""
        return last_checkpoint_path(self.config)

    @property
    def best_path(self) -> Path:
        """The best epoch's model file."""
        return Path(self.config.checkpoint_dir) / BEST_MODEL

    @property
    def trainable(self) -> list[nn.Parameter]:
        """The parameters the optimizer steps (the forward model's only when it is learnt)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def this_run(self) -> list[EpochMetrics]:
        """The epochs trained by this process (not those restored from a checkpoint)."""
        return [m for m in self.history if m.epoch >= self.start_epoch]
