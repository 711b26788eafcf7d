"""The training engine: one process, or DDP over several, with AMP, accumulation, checkpoints and resume.

``train`` decides how to run:

* a launcher already set ``RANK``/``WORLD_SIZE`` (torchrun, SLURM): join its process group;
* ``devices > 1``: spawn that many workers itself (NCCL on GPUs, gloo on CPU);
* otherwise: train in this process.

Each process runs a :class:`Trainer`, a short list of named steps: set up, restore
(or fit the forward model), then per epoch train, validate, select the best epoch
and save a checkpoint, and finally tear down. Rank 0 alone writes checkpoints and
reports metrics. Every epoch ends with an atomic, typed checkpoint
(:class:`~fusemycell.training.checkpoint.TrainingCheckpoint`), so a killed run
resumes from its last complete epoch.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import logging
import math
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, Subset
from torch.utils.data.distributed import DistributedSampler

from fusemycell.devices import Precision, resolve_device, resolve_precision, resolve_world_size
from fusemycell.memory import MemoryPeak
from fusemycell.metrics.ssim import normalized_ssim
from fusemycell.models.card import ModelCard, TrainingSummary, ValidationSummary, card_for
from fusemycell.models.checkpoint import TrainedModel, atomic_torch_save, load_model, safe_torch_load
from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D
from fusemycell.patching.config import AugmentationParams
from fusemycell.patching.torch_dataset import PatchDataset
from fusemycell.progress import track
from fusemycell.training.checkpoint import EpochMetrics, TrainingCheckpoint, restore_state, resume_error
from fusemycell.training.config import TrainingConfig
from fusemycell.training.losses import image_loss, ssim3d
from fusemycell.training.physics import SingleViewForwardModel, consistency_loss
from fusemycell.training.stores import store_spacing
from fusemycell.training.volumes import VolumeValidation, volume_nssim

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
BEST_MODEL = "best.pt"
SPAWN_RESULT = "result.pt"

__all__ = ["BEST_MODEL", "LAST_CHECKPOINT", "EpochMetrics", "FusionModel", "TrainingResult", "train"]


@dataclass
class TrainingResult:
    """The best model and how training went."""

    model: TrainedModel
    history: list[EpochMetrics]
    best_epoch: int
    stopped_early: bool
    physics: dict[str, float] = field(default_factory=dict)


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


def unet_config_for(config: TrainingConfig, spacing_zyx: tuple[float, float, float]) -> UNetConfig:
    """The network's configuration: the training parameters' architecture at the data's voxel size."""
    return config.model.model_copy(update={"spacing_zyx": tuple(float(s) for s in spacing_zyx)})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may draw from NumPy's global stream
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    name, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
            "name": str(name),
        },
        "python": random.getstate(),
    }


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    legacy = (
        numpy_state["name"],
        numpy_state["keys"].numpy().astype(np.uint32),
        numpy_state["position"],
        numpy_state["has_gauss"],
        numpy_state["cached"],
    )
    np.random.set_state(legacy)  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class CosineSchedule:
    """Linear warm-up then cosine decay over ``total_steps``; :meth:`plan` re-plans the total (time budget)."""

    def __init__(self, total_steps: int, warmup_fraction: float, min_fraction: float):
        self.warmup_fraction, self.min_fraction = warmup_fraction, min_fraction
        self.plan(total_steps)

    def plan(self, total_steps: int) -> None:
        """Spread the schedule over ``total_steps`` optimizer steps."""
        self.total_steps = max(1, int(total_steps))
        self.warmup = int(round(self.warmup_fraction * self.total_steps))

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        return self.min_fraction + (1 - self.min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def steps_that_fit(
    remaining_s: float, step_s: float, epoch_overhead_s: float, steps_per_epoch: int, max_epochs: int
) -> tuple[int, int]:
    """``(optimizer steps, epochs)`` that fit in ``remaining_s``: each step costs ``step_s``, each epoch
    ``epoch_overhead_s`` more (validation, checkpoint). The last epoch may be shortened to use the time
    left, but not below a quarter of an epoch (its validation would cost more than its steps bring)."""
    steps_left, epochs_left = 0, 0
    for epochs in range(1, max_epochs + 1):
        affordable = int((remaining_s - epochs * epoch_overhead_s) / max(step_s, 1e-9))
        steps = min(epochs * steps_per_epoch, affordable)
        if steps - (epochs - 1) * steps_per_epoch < max(1, steps_per_epoch // 4):
            break
        steps_left, epochs_left = steps, epochs
    return steps_left, epochs_left


def fit_forward_model(
    physics: SingleViewForwardModel, dataset: PatchDataset, steps: int, device: torch.device, seed: int
) -> dict[str, float]:
    """Fit ``A`` so that ``A(fused) ~ angle`` on training pairs: the forward model's parameters from data."""
    if steps <= 0 or len(dataset) == 0:
        return physics.describe()
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=4,
        sampler=RandomSampler(dataset, replacement=True, num_samples=steps * 4, generator=generator),
    )
    optimizer = torch.optim.Adam(physics.parameters(), lr=0.05)
    for batch in loader:  # (input, target[, data range], geometry): the geometry comes last
        single_view, fused, geometry = batch[0], batch[1], batch[-1]
        optimizer.zero_grad(set_to_none=True)
        loss = consistency_loss(physics, fused.to(device), single_view[:, :1].to(device), geometry.to(device))
        loss.backward()
        optimizer.step()
    return physics.describe()


def batch_loss(
    prediction: torch.Tensor,
    reconstructed: torch.Tensor | None,
    single_view: torch.Tensor,
    target: torch.Tensor,
    config: TrainingConfig,
    *,
    data_range: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The training loss (image loss plus the physics term) and the consistency term alone: one definition.

    ``data_range`` is SSIM's range of each patch's volume (the challenge's, on the whole volume).
    """
    loss = image_loss(prediction, target, config.loss, data_range)
    if reconstructed is None:
        return loss, None
    consistency = torch.nn.functional.l1_loss(reconstructed, single_view[:, :1].float())  # not the position channels
    return loss + config.physics.weight * consistency, consistency


def train(
    config: TrainingConfig,
    train_store: str | os.PathLike,
    val_store: str | os.PathLike,
    *,
    augmentation: AugmentationParams | None = None,
    epoch_callback: Callable[[EpochMetrics], None] | None = None,
    card: ModelCard | None = None,
    volumes: VolumeValidation | None = None,
) -> TrainingResult:
    """Train a U-Net on the patch stores and return the best model (by ``config.monitor``).

    ``volumes`` are the whole validation volumes scored after every epoch (``val_volume_nssim``,
    the challenge's N_SSIM with the inference tiling); ``config.monitor: val_volume_nssim`` needs them.

    ``augmentation`` applies to training patches only. ``epoch_callback`` is
    called on rank 0 after every epoch (it must be picklable when the engine
    spawns workers). ``card`` is the model card the saved model carries (its
    architecture is the network trained; physics and validation metrics are filled
    in); by default, ``config.model`` at the training patches' voxel size.
    """
    device = resolve_device(config.device)
    if config.monitor == "val_volume_nssim" and (volumes is None or not volumes.pairs):
        raise ValueError(
            "training.monitor is val_volume_nssim but no whole validation volume was given; "
            "check preprocessing.split.val_fraction, or set training.monitor: val_nssim"
        )
    job = TrainingJob(config, str(train_store), str(val_store), augmentation, epoch_callback, card, volumes)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        job = replace(job, world_size=int(os.environ["WORLD_SIZE"]), launched=True)
        return Trainer(job, int(os.environ["RANK"])).run()  # type: ignore[return-value]
    world_size = resolve_world_size(config.devices, device)
    if world_size == 1:
        return Trainer(job, 0).run()  # type: ignore[return-value]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    logger.info("training on %d %s processes (DDP, spawned)", world_size, device.type)
    torch.multiprocessing.spawn(_spawned, args=(replace(job, world_size=world_size),), nprocs=world_size, join=True)
    payload = safe_torch_load(Path(config.checkpoint_dir) / SPAWN_RESULT)
    return TrainingResult(
        model=TrainedModel.from_payload(payload["model"]),
        history=[EpochMetrics(**h) for h in payload["history"]],
        best_epoch=int(payload["best_epoch"]),
        stopped_early=bool(payload["stopped_early"]),
        physics=dict(payload["physics"]),
    )


def _spawned(rank: int, job: TrainingJob) -> None:
    Trainer(job, rank).run()


@dataclass
class BestEpoch:
    """The best epoch so far by the monitored quantity, and its weights."""

    higher_is_better: bool
    score: float
    epoch: int = 0
    bad_epochs: int = 0
    state: dict[str, torch.Tensor] | None = None

    monitor: str = "val_volume_nssim"

    def update(self, metrics: EpochMetrics, network: nn.Module) -> bool:
        """Record ``metrics``' epoch if it improves (or is the first); True when it does."""
        score = float(getattr(metrics, self.monitor))
        improved = score > self.score if self.higher_is_better else score < self.score
        if improved or self.epoch == 0:
            self.score, self.epoch, self.bad_epochs = score, metrics.epoch, 0
            self.state = copy.deepcopy(network.state_dict())
            return True
        self.bad_epochs += 1
        return False


class Trainer:
    """One process of a training run: :meth:`run` is the list of steps."""

    def __init__(self, job: TrainingJob, rank: int):
        self.job, self.config, self.rank = job, job.config, rank
        self.distributed = job.world_size > 1
        self.main = rank == 0
        self.checkpoint_dir = Path(self.config.checkpoint_dir)
        self.last_path = self.checkpoint_dir / LAST_CHECKPOINT
        self.best_path = self.checkpoint_dir / BEST_MODEL
        self.history: list[EpochMetrics] = []
        self.start_epoch = 1
        self.stopped_early = False
        higher = job.config.monitor != "val_loss"
        self.best = BestEpoch(higher, -math.inf if higher else math.inf, monitor=job.config.monitor)
        self.wrapped: nn.Module | None = None
        self.planned_epochs = self.config.epochs
        self.step_limit: int | None = None  # with a time budget: the optimizer steps that fit
        self.deadline: float | None = None  # with a time budget: when training steps must stop
        self.started = time.perf_counter()

    def run(self) -> TrainingResult | None:
        """Set up, restore, train epoch after epoch, finish; tear down whatever happens."""
        try:
            self.set_up()
            checkpoint = self.read_checkpoint()
            self.build_optimizer(checkpoint)
            if checkpoint is not None:
                self.restore(checkpoint)
            self.started = time.perf_counter()
            for epoch in range(self.start_epoch, self.config.epochs + 1):
                metrics = self.train_one_epoch(epoch)
                improved = self.best.update(metrics, self.model.unet)
                self.history.append(metrics)
                self.plan_budget(epoch)
                self.save_checkpoint(metrics, improved)
                if self.should_stop() or self.out_of_budget(epoch):
                    break
            return self.finish()
        finally:
            self.tear_down()

    # -- set up ---------------------------------------------------------------------------------------

    def set_up(self) -> None:
        """Process group and device, seeds, precision, data, card, network and forward model."""
        config = self.config
        self.device = resolve_device(config.device)
        if self.distributed:
            dist.init_process_group(
                "nccl" if self.device.type == "cuda" else "gloo", rank=self.rank, world_size=self.job.world_size
            )
            if self.device.type == "cuda":
                local_rank = int(os.environ.get("LOCAL_RANK", self.rank % max(1, torch.cuda.device_count())))
                self.device = torch.device("cuda", local_rank)
                torch.cuda.set_device(self.device)
        _seed_everything(config.seed)  # same initial weights on every rank
        self.precision: Precision = resolve_precision(self.device, config.amp, config.amp_dtype)
        physics_on = config.physics.enabled
        self.train_data = PatchDataset(
            self.job.train_store, self.job.augmentation, seed=config.seed, geometry=physics_on, data_range=True
        )
        self.val_data: Any = PatchDataset(self.job.val_store, None, geometry=physics_on, data_range=True)
        if config.max_val_patches is not None and len(self.val_data) > config.max_val_patches:
            self.val_data = Subset(self.val_data, range(config.max_val_patches))
        store = self.train_data.store
        self.card = self.job.card or card_for(unet_config_for(config, store_spacing(store)), store.patch_size_zyx)
        physics = None
        if physics_on:
            parameters = config.physics
            physics = SingleViewForwardModel(
                parameters.illumination_attenuation_um,
                parameters.detection_attenuation_um,
                parameters.blur_growth_per_um,
            )
        self.model = FusionModel(UNet3D(self.card.architecture), physics).to(self.device)
        self.memory = MemoryPeak(self.device)

    def read_checkpoint(self) -> TrainingCheckpoint | None:
        """With ``resume``, the last checkpoint, checked before anything is restored or written."""
        if not (self.config.resume and self.last_path.exists()):
            return None
        checkpoint = TrainingCheckpoint.read(self.last_path)
        if checkpoint.card.architecture != self.card.architecture:
            raise resume_error(self.last_path, "it was trained with a different model configuration")
        restore_state(self.model.unet, checkpoint.model, "the model weights do not fit", self.last_path)
        if self.model.physics is not None and checkpoint.physics is not None:
            restore_state(self.model.physics, checkpoint.physics, "the forward model does not fit", self.last_path)
        return checkpoint

    def build_optimizer(self, checkpoint: TrainingCheckpoint | None) -> None:
        """Fit the forward model (fresh runs), wrap for DDP, then AdamW, the LR schedule and the scaler."""
        config, physics = self.config, self.model.physics
        if checkpoint is None and physics is not None and config.physics.fit_steps:
            fitted = fit_forward_model(physics, self.train_data, config.physics.fit_steps, self.device, config.seed)
            if self.main:
                logger.info("forward model fitted on training pairs: %s", _fmt_params(fitted))
        if physics is not None and not config.physics.learn:
            physics.requires_grad_(False)
        self.wrapped = self.model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=ids)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        samples_per_rank = config.patches_per_epoch or math.ceil(len(self.train_data) / self.job.world_size)
        self.steps_per_epoch = math.ceil(
            max(1, math.ceil(samples_per_rank / config.batch_size)) / config.accumulation_steps
        )
        self.schedule = CosineSchedule(
            self.steps_per_epoch * config.epochs, config.warmup_fraction, config.min_lr_fraction
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.use_scaler)

    def restore(self, checkpoint: TrainingCheckpoint) -> None:
        """Optimizer, scheduler, scaler, RNG, history and best epoch from the checkpoint."""
        path = self.last_path
        restore_state(self.optimizer, checkpoint.optimizer, "the optimizer state does not fit", path)
        restore_state(self.scheduler, checkpoint.scheduler, "the scheduler state does not fit", path)
        restore_state(self.scaler, checkpoint.scaler, "the gradient scaler state does not fit", path)
        try:
            _restore_rng(checkpoint.rng)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise resume_error(path, f"its RNG states are unreadable ({exc!r})") from None
        self.history = list(checkpoint.history)
        self.start_epoch = checkpoint.epoch + 1
        self.best.epoch, self.best.score, self.best.bad_epochs = (
            checkpoint.best_epoch,
            checkpoint.best_score,
            checkpoint.bad_epochs,
        )
        self.best.state = self._best_state_after_resume(checkpoint)
        if self.main:
            logger.info("resuming from %s after epoch %d", path, checkpoint.epoch)
            if self.start_epoch > self.config.epochs:
                logger.warning(
                    "%s already holds epoch %d of the %d asked for: nothing left to train "
                    "(raise training.epochs to train longer, or set training.resume: false to start over)",
                    path,
                    checkpoint.epoch,
                    self.config.epochs,
                )

    def _best_state_after_resume(self, checkpoint: TrainingCheckpoint) -> dict[str, torch.Tensor]:
        if self.best.epoch == checkpoint.epoch:
            # the checkpoint's own weights are the best; best.pt, written after it, may not have been
            if self.main:
                self._save_best(_best(self.history, self.best.epoch))
            return copy.deepcopy(self.model.unet.state_dict())
        if self.best_path.exists():
            return load_model(self.best_path).network.state_dict()
        return copy.deepcopy(self.model.unet.state_dict())

    # -- one epoch ------------------------------------------------------------------------------------

    def train_one_epoch(self, epoch: int) -> EpochMetrics:
        """Train on every training patch once, then validate; the epoch's metrics."""
        started = time.perf_counter()
        self.memory.reset()
        self.model.train()
        self.train_data.set_epoch(epoch)
        loader = self._loader(epoch)
        totals = {"loss": 0.0, "consistency": 0.0, "seen": 0, "steps": 0}
        self.optimizer.zero_grad(set_to_none=True)
        batches = track(loader, f"epoch {epoch}/{self.planned_epochs}", unit="batch", summary=False, enabled=self.main)
        for step, batch in enumerate(batches):  # the epoch's own log line is the summary
            if step % self.config.accumulation_steps == 0 and self.budget_spent():
                break  # the last epoch ends with the budget: its steps were planned to fit
            self._train_step(step, len(loader), batch, totals)
            self.memory.sample()
        train_time = time.perf_counter() - started
        validation = validate(self.model, self.val_data, self.config, self.device, precision=self.precision)
        volume_score = self.validate_volumes()
        validation_time = time.perf_counter() - started - train_time
        self.memory.sample()
        seen, patches = totals["seen"], totals["seen"] * self.job.world_size
        return EpochMetrics(
            epoch=epoch,
            train_loss=totals["loss"] / max(1, seen),
            val_loss=validation["loss"],
            val_ssim=validation["ssim"],
            val_ssim_input=validation["ssim_input"],
            val_nssim=validation["nssim"],
            learning_rate=float(self.optimizer.param_groups[0]["lr"]),
            epoch_time_s=time.perf_counter() - started,
            patches_per_s=patches / max(train_time, 1e-9),
            voxels_per_s=patches * int(np.prod(self.train_data.store.patch_size_zyx)) / max(train_time, 1e-9),
            peak_rss_mb=self.memory.rss_mb,
            peak_device_mb=self.memory.peak_device_mb,
            train_consistency=totals["consistency"] / seen if self.model.physics is not None and seen else float("nan"),
            val_volume_nssim=volume_score,
            optimizer_steps=int(totals["steps"]),
            train_time_s=train_time,
            validation_time_s=validation_time,
        )

    def validate_volumes(self) -> float:
        """``val_volume_nssim`` of the network now: scored on rank 0, every rank gets it (NaN without volumes)."""
        if self.job.volumes is None:
            return float("nan")
        score = torch.tensor([float("nan")], device=self.device)
        if self.main:
            score[0] = volume_nssim(self.model.unet, self.job.volumes, self.card, self.device)[0]
            self.model.train()
        if self.distributed:
            torch.distributed.broadcast(score, src=0)
        return float(score.item())

    def _loader(self, epoch: int) -> DataLoader:
        config, data = self.config, self.train_data
        if config.patches_per_epoch:  # the work of an epoch no longer depends on the store's size
            seed = (config.seed * 7919 + epoch) * max(1, self.job.world_size) + self.rank
            sampler: Any = RandomSampler(
                data,
                replacement=True,
                num_samples=config.patches_per_epoch,
                generator=torch.Generator().manual_seed(seed),
            )
        elif self.distributed:
            sampler = DistributedSampler(
                data, num_replicas=self.job.world_size, rank=self.rank, shuffle=True, seed=config.seed
            )
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(data, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
        return DataLoader(
            data,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _train_step(self, step: int, n_batches: int, batch: Any, totals: dict[str, float]) -> None:
        """One micro-batch; an optimizer step at the end of each accumulation group."""
        accumulation = self.config.accumulation_steps
        single_view, target, data_range = (t.to(self.device, non_blocking=True) for t in batch[:3])
        geometry = batch[3].to(self.device, non_blocking=True) if self.model.physics is not None else None
        group_size = min(accumulation, n_batches - (step // accumulation) * accumulation)
        last_of_group = (step + 1) % accumulation == 0 or step + 1 == n_batches
        sync = contextlib.nullcontext() if (last_of_group or not self.distributed) else self.wrapped.no_sync()
        with sync:
            with self.precision.autocast(self.device):
                prediction, reconstructed = self.wrapped(single_view, geometry)
            loss, consistency = batch_loss(
                prediction, reconstructed, single_view, target, self.config, data_range=data_range
            )
            self.scaler.scale(loss / group_size).backward()
        if last_of_group:
            self._optimizer_step()
            totals["steps"] += 1
        totals["loss"] += float(loss.detach()) * len(single_view)
        if consistency is not None:
            totals["consistency"] += float(consistency.detach()) * len(single_view)
        totals["seen"] += len(single_view)

    def _optimizer_step(self) -> None:
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    # -- checkpoints ----------------------------------------------------------------------------------

    def save_checkpoint(self, metrics: EpochMetrics, improved: bool) -> None:
        """Rank 0: the epoch's checkpoint, then best.pt when it improved; log and report the epoch."""
        if self.main:
            # the checkpoint first: a kill between the two writes leaves no best.pt ahead of it
            self._checkpoint(metrics.epoch).save(self.last_path)
            if improved:
                self._save_best(metrics)
            _log_epoch(metrics, self.planned_epochs, self._this_run(), self.deadline)
            if self.job.epoch_callback is not None:
                self.job.epoch_callback(metrics)
        if self.distributed:
            dist.barrier()

    def _checkpoint(self, epoch: int) -> TrainingCheckpoint:
        physics = self.model.physics
        return TrainingCheckpoint(
            epoch=epoch,
            card=self.card,
            training_config=self.config.model_dump(mode="json"),
            model=self.model.unet.state_dict(),
            physics=physics.state_dict() if physics is not None else None,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=_rng_state(),
            history=list(self.history),
            best_epoch=self.best.epoch,
            best_score=self.best.score,
            bad_epochs=self.best.bad_epochs,
        )

    def _save_best(self, metrics: EpochMetrics | None) -> None:
        card = _model_card(self.card, metrics, self.model.physics, self.config.monitor, self._summary())
        atomic_torch_save(TrainedModel(self.model.unet, card).payload(), self.best_path)

    def _summary(self) -> TrainingSummary:
        """Steps, patches and time of the epochs trained so far (the card's ``training``)."""
        epochs = self.history
        train_s = sum(m.train_time_s for m in epochs if not math.isnan(m.train_time_s))
        total_s = sum(m.epoch_time_s for m in epochs)
        steps = sum(m.optimizer_steps for m in epochs)
        patches = int(round(sum(m.patches_per_s * m.train_time_s for m in epochs if not math.isnan(m.train_time_s))))
        validation_s = sum(m.validation_time_s for m in epochs if not math.isnan(m.validation_time_s))
        return TrainingSummary(
            epochs=len(epochs),
            optimizer_steps=steps,
            patches=patches,
            minutes=total_s / 60,
            steps_per_minute=60 * steps / train_s if train_s > 0 else 0.0,
            patches_per_minute=60 * patches / train_s if train_s > 0 else 0.0,
            validation_share=min(1.0, validation_s / total_s) if total_s > 0 else 0.0,
            precision="bfloat16"
            if self.precision.enabled and self.precision.dtype == torch.bfloat16
            else ("float16" if self.precision.enabled else "float32"),
        )

    def _this_run(self) -> list[EpochMetrics]:
        """The epochs trained by this process (not those restored from a checkpoint)."""
        return [m for m in self.history if m.epoch >= self.start_epoch]

    def plan_budget(self, epoch: int) -> None:
        """With a time budget, plan the optimizer steps that fit, and the learning rate on them.

        After every epoch, from this run's mean time per optimizer step and per epoch of validation
        and checkpointing: the steps left are those whose training and the validation of the epochs
        they make fit in the time left; the last epoch is shortened to end with the budget (not left
        unused), unless it would be under a quarter of an epoch. Rank 0 plans; every rank follows.
        """
        budget = self.config.budget_minutes
        if budget is None:
            return
        done = self._this_run()
        steps_done = max(1, sum(m.optimizer_steps for m in done))
        step_time = sum(m.train_time_s for m in done) / steps_done
        fixed = float(np.mean([m.epoch_time_s - m.train_time_s for m in done]))
        remaining = budget * 60 - (time.perf_counter() - self.started)
        steps_left, epochs_left = steps_that_fit(
            remaining, step_time, fixed, self.steps_per_epoch, self.config.epochs - epoch
        )
        plan = torch.tensor([float(self.scheduler.last_epoch + steps_left), float(epoch + epochs_left)])
        if self.distributed:
            torch.distributed.broadcast(plan.to(self.device), src=0)
        self.step_limit, self.planned_epochs = int(plan[0]), int(plan[1])
        self.schedule.plan(max(self.step_limit, self.scheduler.last_epoch + 1))
        self.deadline = self.started + budget * 60 - fixed
        if self.main and epoch == self.start_epoch:
            logger.info(
                "time budget %.1f min: %d more optimizer steps (%.2f s each) in %d more epochs; learning rate "
                "planned on them",
                budget,
                steps_left,
                step_time,
                epochs_left,
            )

    def budget_spent(self) -> bool:
        """True when the planned optimizer steps are taken (or, in one process, the training time is up)."""
        if self.step_limit is not None and self.scheduler.last_epoch >= self.step_limit:
            return True
        return not self.distributed and self.deadline is not None and time.perf_counter() > self.deadline

    def out_of_budget(self, epoch: int) -> bool:
        """True when the planned epochs are done (every rank has the same plan)."""
        if self.config.budget_minutes is None or epoch < self.planned_epochs:
            return False
        if self.main and epoch < self.config.epochs:
            elapsed = (time.perf_counter() - self.started) / 60
            logger.info(
                "time budget reached after epoch %d (%.1f of %.1f min)", epoch, elapsed, self.config.budget_minutes
            )
        return True

    def should_stop(self) -> bool:
        """Early stopping after ``early_stopping_patience`` epochs without improvement."""
        patience = self.config.early_stopping_patience
        if patience and self.best.bad_epochs >= patience:
            self.stopped_early = True
            if self.main:
                logger.info(
                    "early stopping: no improvement of %s for %d epochs", self.config.monitor, self.best.bad_epochs
                )
        return self.stopped_early

    # -- finish and tear down -------------------------------------------------------------------------

    def finish(self) -> TrainingResult:
        """The best epoch's model; the replicas are checked identical; spawned runs hand the result back."""
        if self.best.state is not None:
            self.model.unet.load_state_dict(self.best.state)
        trained = TrainedModel(
            UNet3D(self.card.architecture),
            _model_card(
                self.card,
                _best(self.history, self.best.epoch),
                self.model.physics,
                self.config.monitor,
                self._summary(),
            ),
        )
        trained.network.load_state_dict(self.model.unet.state_dict())
        physics = self.model.physics.describe() if self.model.physics is not None else {}
        result = TrainingResult(trained, self.history, self.best.epoch, self.stopped_early, physics)
        if self.distributed:
            self._check_replicas()
            if not self.job.launched and self.main:
                payload = {
                    "model": trained.payload(),
                    "history": [asdict(h) for h in self.history],
                    "best_epoch": self.best.epoch,
                    "stopped_early": self.stopped_early,
                    "physics": physics,
                }
                atomic_torch_save(payload, self.checkpoint_dir / SPAWN_RESULT)
            dist.barrier()  # no rank tears down its process group while another still talks to it
        return result

    def _check_replicas(self) -> None:
        digests: list[Any] = [None] * self.job.world_size
        dist.all_gather_object(digests, _weights_digest(self.model.unet))
        if len(set(digests)) != 1:
            raise RuntimeError(
                f"DDP replicas diverged: {len(set(digests))} different weight sets over {len(digests)} ranks"
            )

    def tear_down(self) -> None:
        """Destroy the process group (DDP's reducer first)."""
        if self.distributed and dist.is_initialized():
            # DDP's reducer holds the process group; left to the interpreter's final
            # garbage collection, gloo's threads are destroyed during finalisation
            # and the worker aborts ("terminate called without an active exception").
            self.wrapped = None
            gc.collect()
            dist.destroy_process_group()


def _weights_digest(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _best(history: list[EpochMetrics], best_epoch: int) -> EpochMetrics | None:
    return next((h for h in history if h.epoch == best_epoch), history[-1] if history else None)


def _model_card(
    card: ModelCard,
    metrics: EpochMetrics | None,
    physics: SingleViewForwardModel | None,
    monitor: str | None = None,
    summary: TrainingSummary | None = None,
) -> ModelCard:
    """The card with the chosen epoch's validation metrics, the training summary and the fitted forward model."""
    validation = None
    if metrics is not None:
        validation = ValidationSummary(
            epoch=metrics.epoch,
            val_nssim=metrics.val_nssim,
            val_ssim=metrics.val_ssim,
            val_loss=metrics.val_loss,
            val_volume_nssim=None if math.isnan(metrics.val_volume_nssim) else metrics.val_volume_nssim,
            monitor=monitor,
        )
    return card.model_copy(
        update={
            "validation": validation,
            "physics": physics.describe() if physics is not None else None,
            "training": summary,
        }
    )


def validate(
    model: FusionModel, data: Any, config: TrainingConfig, device: torch.device, *, precision: Precision
) -> dict[str, float]:
    """Loss, SSIM and N_SSIM (challenge formula, input as reference) over the validation patches."""
    model.eval()
    loader = DataLoader(data, batch_size=config.batch_size, sampler=SequentialSampler(data), num_workers=0)
    loss_sum = ssim_sum = ssim_input_sum = 0.0
    count = 0
    with torch.no_grad():
        for batch in loader:
            single_view, target, data_range = (t.to(device) for t in batch[:3])
            geometry = batch[3].to(device) if model.physics is not None else None
            with precision.autocast(device):
                prediction, reconstructed = model(single_view, geometry)
            loss, _ = batch_loss(prediction, reconstructed, single_view, target, config, data_range=data_range)
            loss_sum += float(loss) * len(single_view)
            ssim_sum += float(ssim3d(prediction, target, data_range).sum())
            ssim_input_sum += float(ssim3d(single_view[:, :1], target, data_range).sum())
            count += len(single_view)
    model.train()
    ssim_mean, ssim_input_mean = ssim_sum / max(1, count), ssim_input_sum / max(1, count)
    return {
        "loss": loss_sum / max(1, count),
        "ssim": ssim_mean,
        "ssim_input": ssim_input_mean,
        "nssim": float(normalized_ssim(ssim_mean, ssim_input_mean)) if ssim_input_mean < 1 else 0.0,
    }


def _fmt_params(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in values.items())


def _log_epoch(metrics: EpochMetrics, epochs: int, this_run: list[EpochMetrics], deadline: float | None = None) -> None:
    """One line per epoch: losses, scores, time (validation's share), steps and throughput, and an ETA
    that honours the time budget."""
    remaining = (epochs - metrics.epoch) * float(np.mean([m.epoch_time_s for m in this_run]))
    if deadline is not None:
        remaining = min(remaining, max(0.0, deadline - time.perf_counter()))
    validation_share = metrics.validation_time_s / metrics.epoch_time_s if metrics.epoch_time_s > 0 else 0.0
    logger.info(
        "epoch %d/%d  train %.4f  val %.4f  SSIM %.4f (input %.4f)  N_SSIM %.4f%s  lr %.2e | %.1f s "
        "(validation %.0f%%), %d steps, %.0f steps/min, %.1f patches/s, ETA %s, peak RSS %.0f MB",
        metrics.epoch,
        epochs,
        metrics.train_loss,
        metrics.val_loss,
        metrics.val_ssim,
        metrics.val_ssim_input,
        metrics.val_nssim,
        "" if math.isnan(metrics.val_volume_nssim) else f"  volumes N_SSIM {metrics.val_volume_nssim:.4f}",
        metrics.learning_rate,
        metrics.epoch_time_s,
        100 * validation_share,
        metrics.optimizer_steps,
        60 * metrics.optimizer_steps / max(metrics.train_time_s, 1e-9),
        metrics.patches_per_s,
        time.strftime("%H:%M:%S", time.gmtime(remaining)) if remaining < 86400 else f"{remaining / 3600:.0f} h",
        metrics.peak_rss_mb,
    )
