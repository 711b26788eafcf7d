"""Starting one process of a training run: the complete :class:`~fusemycell.training.state.TrainingState`.

:func:`start` joins the process group, seeds, opens the data, builds the network, then either
restores the last checkpoint (``resume``, checked before anything is restored or written) or fits
the forward model, and finally builds the optimizer, the learning-rate schedule and the scaler.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler, Subset

from fusemycell.devices import CpuThreads, local_cuda_device, memory_format, resolve_device, resolve_precision
from fusemycell.memory import MemoryPeak
from fusemycell.models.card import ModelCard, card_for
from fusemycell.models.model_file import CheckpointError, load_model
from fusemycell.models.unet import UNet3D
from fusemycell.patching.torch_dataset import PatchDataset
from fusemycell.training.budget import TimeBudget
from fusemycell.training.checkpoint import (
    TrainingCheckpoint,
    restore_state,
    resume_changes,
    resume_error,
    unreadable_for_resume,
)
from fusemycell.training.config import TrainingConfig
from fusemycell.training.physics import SingleViewForwardModel, consistency_loss
from fusemycell.training.records import best_of, save_best
from fusemycell.training.rng import restore_rng, seed_everything
from fusemycell.training.schedule import CosineSchedule
from fusemycell.training.state import (
    BestEpoch,
    FusionModel,
    TrainingJob,
    TrainingState,
    last_checkpoint_path,
    unet_config_for,
)
from fusemycell.training.stores import store_spacing

logger = logging.getLogger(__name__)


def start(job: TrainingJob, rank: int) -> TrainingState:
    """Set up process ``rank`` of ``job``, restore its checkpoint or fit the forward model: the state to train."""
    config = job.config
    device = join_process_group(job, rank)
    threads = CpuThreads(job.world_size) if device.type == "cpu" else None
    seed_everything(config.seed)  # same initial weights on every rank
    train_data, val_data = patch_data(job)
    store = train_data.store
    card = job.card or card_for(unet_config_for(config, store_spacing(store)), store.patch_size_zyx)
    physics = forward_model(config)  # before the U-Net: the order the generators are drawn in
    model = FusionModel(UNet3D(card.architecture), physics).to(device, memory_format=memory_format(device))
    checkpoint = read_checkpoint(job, card, model)
    if checkpoint is None and physics is not None and config.physics.fit_steps:
        fitted = fit_forward_model(physics, train_data, config.physics.fit_steps, device, config.seed)
        if rank == 0:
            logger.info(
                "forward model fitted on training pairs: %s", ", ".join(f"{k} {v:.3g}" for k, v in fitted.items())
            )
    if physics is not None and not config.physics.learn:
        physics.requires_grad_(False)
    wrapped: nn.Module = model
    if job.world_size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    precision = resolve_precision(device, config.amp, config.amp_dtype)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = epoch_steps(config, len(train_data), job.world_size)
    # provisional: with a time budget the schedule is planned on the steps that fit once the first are timed
    schedule = CosineSchedule(steps_per_epoch * config.epochs, config.warmup_fraction, config.min_lr_fraction)
    state = TrainingState(
        job=job,
        rank=rank,
        device=device,
        precision=precision,
        train_data=train_data,
        val_data=val_data,
        card=card,
        model=model,
        wrapped=wrapped,
        optimizer=optimizer,
        schedule=schedule,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        scaler=torch.amp.GradScaler(device.type, enabled=precision.use_scaler),
        steps_per_epoch=steps_per_epoch,
        memory=MemoryPeak(device),
        best=BestEpoch.none_yet(config.monitor),
        planned_epochs=config.epochs,
        threads=threads,
    )
    if checkpoint is not None:
        restore(state, checkpoint)
    if config.budget_minutes is not None:
        state.budget = TimeBudget(config.budget_minutes * 60, config.volume_validation_share)
        state.patch_voxels = len(val_data) * math.prod(train_data.store.patch_size_zyx)
        state.volume_voxels = job.volumes.voxels() if job.volumes is not None else 0
    if rank == 0 and threads is not None:
        logger.info("CPU threads: %d (of the %d CPUs this process may use)", threads.threads, threads.usable)
    return state


def join_process_group(job: TrainingJob, rank: int) -> torch.device:
    """The process's device; in a distributed run, after joining the process group (NCCL on GPUs, gloo on CPU)."""
    device = resolve_device(job.config.device)
    if job.world_size == 1:
        return device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=job.world_size)
    if device.type == "cuda":
        device = local_cuda_device(rank=rank)
        torch.cuda.set_device(device)
    return device


def patch_data(job: TrainingJob) -> tuple[PatchDataset, Any]:
    """The training patches (augmented) and the validation patches (at most ``max_val_patches``)."""
    config = job.config
    physics_on = config.physics.enabled
    train_data = PatchDataset(job.train_store, job.augmentation, seed=config.seed, geometry=physics_on, data_range=True)
    val_data: Any = PatchDataset(job.val_store, None, geometry=physics_on, data_range=True)
    if config.max_val_patches is not None and len(val_data) > config.max_val_patches:
        val_data = Subset(val_data, range(config.max_val_patches))
    return train_data, val_data


def forward_model(config: TrainingConfig) -> SingleViewForwardModel | None:
    """The single-view forward model of the physics-informed loss, when it is on."""
    if not config.physics.enabled:
        return None
    parameters = config.physics
    return SingleViewForwardModel(
        parameters.illumination_attenuation_um, parameters.detection_attenuation_um, parameters.blur_growth_per_um
    )


def epoch_steps(config: TrainingConfig, patches: int, world_size: int) -> int:
    """Optimizer steps of one epoch on one rank (``patches_per_epoch``, or every patch once over the ranks)."""
    samples_per_rank = config.patches_per_epoch or math.ceil(patches / world_size)
    return math.ceil(max(1, math.ceil(samples_per_rank / config.batch_size)) / config.accumulation_steps)


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


def read_checkpoint(job: TrainingJob, card: ModelCard, model: FusionModel) -> TrainingCheckpoint | None:
    """With ``resume``, the last checkpoint, checked, its weights loaded into ``model``; None to start afresh."""
    path = last_checkpoint_path(job.config)
    if not (job.config.resume and path.exists()):
        return None
    checkpoint = TrainingCheckpoint.read(path)
    if checkpoint.card.architecture != card.architecture:
        raise resume_error(path, "it was trained with a different model configuration")
    restore_state(model.unet, checkpoint.model, "the model weights do not fit", path)
    if model.physics is not None and checkpoint.physics is not None:
        restore_state(model.physics, checkpoint.physics, "the forward model does not fit", path)
    return checkpoint


def restore(state: TrainingState, checkpoint: TrainingCheckpoint) -> None:
    """Optimizer, scheduler, scaler, RNG, history and best epoch from the checkpoint."""
    path = state.last_path
    restore_state(state.optimizer, checkpoint.optimizer, "the optimizer state does not fit", path)
    restore_state(state.scheduler, checkpoint.scheduler, "the scheduler state does not fit", path)
    restore_state(state.scaler, checkpoint.scaler, "the gradient scaler state does not fit", path)
    try:
        restore_rng(checkpoint.rng)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise resume_error(path, f"its RNG states are unreadable ({exc!r})") from None
    state.history = list(checkpoint.history)
    state.start_epoch = checkpoint.epoch + 1
    best = state.best
    best.epoch, best.score, best.bad_epochs = checkpoint.best_epoch, checkpoint.best_score, checkpoint.bad_epochs
    best.state = _best_weights_after_resume(state, checkpoint)
    if not state.main:
        return
    logger.info("resuming from %s after epoch %d", path, checkpoint.epoch)
    for change in resume_changes(
        checkpoint.training_config,
        state.config,
        steps_taken=int(state.scheduler.last_epoch),
        planned_steps=state.schedule.total_steps,
        steps_per_epoch=state.steps_per_epoch,
        epoch=checkpoint.epoch,
    ):
        logger.warning("resuming from %s: %s", path, change)
    if state.start_epoch > state.config.epochs:
        logger.warning(
            "%s already holds epoch %d of the %d asked for: nothing left to train "
            "(raise training.epochs to train longer, or set training.resume: false to start over)",
            path,
            checkpoint.epoch,
            state.config.epochs,
        )


def _best_weights_after_resume(state: TrainingState, checkpoint: TrainingCheckpoint) -> dict[str, torch.Tensor]:
    if state.best.epoch == checkpoint.epoch:
        # the checkpoint's own weights are the best; best.pt, written after it, may not have been
        if state.main:
            save_best(state, best_of(state.history, state.best.epoch))
        return copy.deepcopy(state.model.unet.state_dict())
    if state.best_path.exists():
        try:
            return load_model(state.best_path, give=None).network.state_dict()
        except CheckpointError as exc:
            raise unreadable_for_resume(state.best_path, exc) from None
    return copy.deepcopy(state.model.unet.state_dict())
