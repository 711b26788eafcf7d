"""The training engine: one process, or DDP over several, with AMP, accumulation, checkpoints and resume.

:func:`train` starts the run's processes (:mod:`fusemycell.training.launch`: torchrun, spawned, or
this one). Each process runs a :class:`Trainer`, a short list of named steps over one explicit
:class:`~fusemycell.training.state.TrainingState`: start (set up, restore or fit the forward model,
:mod:`fusemycell.training.setup`), then per epoch train and validate
(:mod:`fusemycell.training.steps`), end the epoch (best epoch, time budget, checkpoint), and finally
finish and tear down. Rank 0 alone writes checkpoints and reports metrics. Every epoch ends with an
atomic, typed checkpoint (:class:`~fusemycell.training.checkpoint.TrainingCheckpoint`), so a killed
run resumes from its last complete epoch.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
from torch import nn

from fusemycell.devices import resolve_device
from fusemycell.models.card import ModelCard
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.unet import UNet3D
from fusemycell.patching.config import AugmentationParams
from fusemycell.training import budget as budget_clock
from fusemycell.training.budget_steps import out_of_budget
from fusemycell.training.checkpoint import EpochMetrics, TrainingCheckpoint
from fusemycell.training.config import TrainingConfig
from fusemycell.training.launch import hands_back_result, launch, save_spawn_result
from fusemycell.training.records import best_of, ended_by, log_epoch, log_outcome, save_best, state_card
from fusemycell.training.rng import rng_state
from fusemycell.training.setup import start
from fusemycell.training.state import (
    BEST_MODEL,
    LAST_CHECKPOINT,
    TrainingJob,
    TrainingResult,
    TrainingState,
)
from fusemycell.training.steps import train_epoch
from fusemycell.training.validation_volumes import VolumeValidation

logger = logging.getLogger(__name__)

__all__ = [
    "BEST_MODEL",
    "LAST_CHECKPOINT",
    "Trainer",
    "TrainingResult",
    "train",
]


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
    return launch(job, device, run_trainer)


def run_trainer(job: TrainingJob, rank: int) -> TrainingResult | None:
    """Process ``rank`` of ``job`` (module level: spawned workers receive it pickled)."""
    return Trainer(job, rank).run()


class Trainer:
    """One process of a training run: :meth:`run` is the list of steps, over :attr:`state`."""

    def __init__(self, job: TrainingJob, rank: int):
        self.job, self.rank = job, rank
        self.state: TrainingState | None = None
        """Everything the process holds, once :func:`~fusemycell.training.setup.start` has built it."""

    def run(self) -> TrainingResult:
        """Start, train epoch after epoch, finish; tear down whatever happens."""
        try:
            state = self.state = start(self.job, self.rank)
            for epoch in range(state.start_epoch, state.config.epochs + 1):
                metrics = train_epoch(state, epoch)
                end_epoch(state, metrics)
                if should_stop(state) or out_of_budget(state, epoch):
                    break
            return finish(state)
        finally:
            tear_down(self.job, self.state)


def end_epoch(state: TrainingState, metrics: EpochMetrics) -> None:
    """Record the epoch: the best epoch so far, the history, the (timed) checkpoint; on a CPU, re-size the
    threads to what other programs leave."""
    improved = state.best.update(metrics, state.model.unet)
    state.history.append(metrics)
    started = budget_clock.now()
    save_checkpoint(state, metrics, improved)
    if state.budget is not None:
        state.budget.checkpointed(budget_clock.now() - started)
    if state.threads is not None:
        state.threads.resize()


def save_checkpoint(state: TrainingState, metrics: EpochMetrics, improved: bool) -> None:
    """Rank 0: the epoch's checkpoint, then best.pt when it improved; log and report the epoch."""
    if state.main:
        # the checkpoint first: a kill between the two writes leaves no best.pt ahead of it
        checkpoint_of(state, metrics.epoch).save(state.last_path)
        if improved:
            save_best(state, metrics)
        remaining = max(0.0, state.budget.remaining) if state.budget is not None else None
        log_epoch(metrics, state.planned_epochs, state.this_run(), remaining)
        if state.job.epoch_callback is not None:
            state.job.epoch_callback(metrics)
    if state.distributed:
        dist.barrier()


def checkpoint_of(state: TrainingState, epoch: int) -> TrainingCheckpoint:
    """The state at the end of ``epoch``, as a checkpoint."""
    physics = state.model.physics
    return TrainingCheckpoint(
        epoch=epoch,
        card=state.card,
        training_config=state.config.model_dump(mode="json"),
        model=state.model.unet.state_dict(),
        physics=physics.state_dict() if physics is not None else None,
        optimizer=state.optimizer.state_dict(),
        scheduler=state.scheduler.state_dict(),
        scaler=state.scaler.state_dict(),
        rng=rng_state(),
        history=list(state.history),
        best_epoch=state.best.epoch,
        best_score=state.best.score,
        bad_epochs=state.best.bad_epochs,
    )


def should_stop(state: TrainingState) -> bool:
    """Early stopping after ``early_stopping_patience`` epochs without improvement."""
    patience = state.config.early_stopping_patience
    if patience and state.best.bad_epochs >= patience:
        state.stopped_early = True
        if state.main:
            logger.info(
                "early stopping: no improvement of %s for %d epochs", state.config.monitor, state.best.bad_epochs
            )
    return state.stopped_early


def finish(state: TrainingState) -> TrainingResult:
    """The best epoch's model; the replicas are checked identical; spawned runs hand the result back."""
    if state.best.state is not None:
        state.model.unet.load_state_dict(state.best.state)
    card = state_card(state, best_of(state.history, state.best.epoch))
    trained = TrainedModel(UNet3D(card.architecture), card)
    trained.network.load_state_dict(state.model.unet.state_dict())
    physics = state.model.physics.describe() if state.model.physics is not None else {}
    ending = ended_by(state)
    result = TrainingResult(trained, state.history, state.best.epoch, state.stopped_early, physics, ending)
    if state.main:
        log_outcome(state.history, state.config)
    if state.distributed:
        check_replicas(state.model.unet, state.job.world_size)
        if hands_back_result(state.job, state.rank):
            save_spawn_result(result, state.config.checkpoint_dir)
        dist.barrier()  # no rank tears down its process group while another still talks to it
    return result


def check_replicas(network: nn.Module, world_size: int) -> None:
    """Every rank holds the same weights (DDP keeps them so; a difference is a bug, raised)."""
    digests: list[Any] = [None] * world_size
    dist.all_gather_object(digests, _weights_digest(network))
    if len(set(digests)) != 1:
        raise RuntimeError(
            f"DDP replicas diverged: {len(set(digests))} different weight sets over {len(digests)} ranks"
        )


def tear_down(job: TrainingJob, state: TrainingState | None) -> None:
    """Destroy the process group (DDP's reducer first)."""
    if job.world_size > 1 and dist.is_initialized():
        # DDP's reducer holds the process group; left to the interpreter's final
        # garbage collection, gloo's threads are destroyed during finalisation
        # and the worker aborts ("terminate called without an active exception").
        if state is not None:
            state.wrapped = None
        gc.collect()
        dist.destroy_process_group()


def _weights_digest(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
