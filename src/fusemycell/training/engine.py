"""The training engine: one process, or DDP over several, with AMP, accumulation, checkpoints and resume.

``train`` decides how to run:

* a launcher already set ``RANK``/``WORLD_SIZE`` (torchrun, SLURM): join its process group;
* ``devices > 1``: spawn that many workers itself (NCCL on GPUs, gloo on CPU);
* otherwise: train in this process.

Rank 0 alone writes checkpoints and reports metrics. Every epoch ends with an
atomic checkpoint (model, optimizer, scheduler, scaler, epoch, RNG states, model
config), so a killed run resumes from its last complete epoch.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, Subset
from torch.utils.data.distributed import DistributedSampler

from fusemycell.models.card import ModelCard, ValidationSummary, card_for
from fusemycell.models.checkpoint import CheckpointError, TrainedModel, atomic_torch_save, safe_torch_load
from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D
from fusemycell.patching.config import AugmentationParams
from fusemycell.patching.torch_dataset import PatchDataset
from fusemycell.progress import track
from fusemycell.training.config import TrainingConfig
from fusemycell.training.devices import Precision, resolve_device, resolve_precision, resolve_world_size
from fusemycell.training.losses import image_loss, normalized_ssim, ssim3d
from fusemycell.training.physics import SingleViewForwardModel, consistency_loss
from fusemycell.training.stores import store_spacing

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "fusemycell-checkpoint"
LAST_CHECKPOINT = "last.pt"
BEST_MODEL = "best.pt"
SPAWN_RESULT = "result.pt"


@dataclass
class EpochMetrics:
    """What one epoch measured; logged to MLflow with ``step = epoch``."""

    epoch: int
    train_loss: float
    val_loss: float
    val_ssim: float
    val_ssim_input: float
    val_nssim: float
    learning_rate: float
    epoch_time_s: float
    patches_per_s: float
    voxels_per_s: float
    peak_rss_mb: float
    peak_device_mb: float
    train_consistency: float = float("nan")


@dataclass
class TrainingResult:
    """The best model and how training went."""

    model: TrainedModel
    history: list[EpochMetrics]
    best_epoch: int
    stopped_early: bool
    physics: dict[str, float] = field(default_factory=dict)
    writes_per_rank: list[int] = field(default_factory=list)
    weight_digests: list[str] = field(default_factory=list)


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


def _schedule(total_steps: int, warmup_fraction: float, min_fraction: float) -> Callable[[int], float]:
    warmup = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _weights_digest(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _MemoryPeak:
    """Peak resident memory of this process (sampled between batches) and of the accelerator."""

    def __init__(self, device: torch.device):
        import psutil

        self.process = psutil.Process()
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.rss = self.process.memory_info().rss
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def sample(self) -> None:
        self.rss = max(self.rss, self.process.memory_info().rss)

    def device_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.device.type == "mps":
            return torch.mps.driver_allocated_memory() / 2**20
        return 0.0


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
    for single_view, fused, geometry in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = consistency_loss(physics, fused.to(device), single_view.to(device), geometry.to(device))
        loss.backward()
        optimizer.step()
    return physics.describe()


def train(
    config: TrainingConfig,
    train_store: str | os.PathLike,
    val_store: str | os.PathLike,
    *,
    augmentation: AugmentationParams | None = None,
    epoch_callback: Callable[[EpochMetrics], None] | None = None,
    card: ModelCard | None = None,
) -> TrainingResult:
    """Train a U-Net on the patch stores and return the best model (by ``config.monitor``).

    ``augmentation`` applies to training patches only. ``epoch_callback`` is
    called on rank 0 after every epoch (it must be picklable when the engine
    spawns workers). ``card`` is the model card the saved model carries (its
    architecture is the network trained; physics and validation metrics are filled
    in); by default, ``config.model`` at the training patches' voxel size.
    """
    device = resolve_device(config.device)
    arguments = (config, str(train_store), str(val_store), augmentation, epoch_callback, card)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rank = int(os.environ["RANK"])
        return _run(rank, int(os.environ["WORLD_SIZE"]), *arguments, launched=True)  # type: ignore[return-value]
    world_size = resolve_world_size(config.devices, device)
    if world_size == 1:
        return _run(0, 1, *arguments)  # type: ignore[return-value]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    logger.info("training on %d %s processes (DDP, spawned)", world_size, device.type)
    torch.multiprocessing.spawn(_run, args=(world_size, *arguments), nprocs=world_size, join=True)
    payload = safe_torch_load(Path(config.checkpoint_dir) / SPAWN_RESULT)
    return TrainingResult(
        model=TrainedModel.from_payload(payload["model"]),
        history=[EpochMetrics(**h) for h in payload["history"]],
        best_epoch=int(payload["best_epoch"]),
        stopped_early=bool(payload["stopped_early"]),
        physics=dict(payload["physics"]),
        writes_per_rank=list(payload["writes_per_rank"]),
        weight_digests=list(payload["weight_digests"]),
    )


def _run(  # noqa: PLR0912, PLR0915, PLR0917 - one loop read as a whole; positional for spawn
    rank: int,
    world_size: int,
    config: TrainingConfig,
    train_store: str,
    val_store: str,
    augmentation: AugmentationParams | None,
    epoch_callback: Callable[[EpochMetrics], None] | None,
    card: ModelCard | None,
    launched: bool = False,
) -> TrainingResult | None:
    distributed = world_size > 1
    device = resolve_device(config.device)
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)
        if device.type == "cuda":
            local_rank = int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count())))
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
    main = rank == 0
    writes = 0
    wrapped: nn.Module | None = None
    try:
        _seed_everything(config.seed)  # same initial weights on every rank
        precision: Precision = resolve_precision(device, config.amp, config.amp_dtype)
        physics_on = config.physics.enabled
        train_data = PatchDataset(train_store, augmentation, seed=config.seed, geometry=physics_on)
        val_data: Any = PatchDataset(val_store, None, geometry=physics_on)
        if config.max_val_patches is not None and len(val_data) > config.max_val_patches:
            val_data = Subset(val_data, range(config.max_val_patches))
        if card is None:
            card = card_for(unet_config_for(config, store_spacing(train_data.store)), train_data.store.patch_size_zyx)
        unet_config = card.architecture
        unet = UNet3D(unet_config)
        physics = None
        if physics_on:
            physics = SingleViewForwardModel(
                config.physics.illumination_attenuation_um,
                config.physics.detection_attenuation_um,
                config.physics.blur_growth_per_um,
            )
        model = FusionModel(unet, physics).to(device)

        checkpoint_dir = Path(config.checkpoint_dir)
        last_path = checkpoint_dir / LAST_CHECKPOINT
        resume_state = None
        if config.resume and last_path.exists():
            resume_state = safe_torch_load(last_path)
            if resume_state.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{last_path}: not a fusemycell training checkpoint")
            if resume_state["unet_config"] != unet_config.model_dump(mode="json"):
                raise CheckpointError(
                    f"{last_path}: trained with a different model configuration; "
                    f"set training.resume: false or delete {checkpoint_dir} to start over"
                )
            model.unet.load_state_dict(resume_state["model"])
            if physics is not None and resume_state.get("physics") is not None:
                physics.load_state_dict(resume_state["physics"])
        elif physics is not None and config.physics.fit_steps:
            fitted = fit_forward_model(physics, train_data, config.physics.fit_steps, device, config.seed)
            if main:
                logger.info("forward model fitted on training pairs: %s", _fmt_params(fitted))
        if physics is not None and not config.physics.learn:
            physics.requires_grad_(False)

        wrapped = model
        if distributed:
            wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        samples_per_rank = math.ceil(len(train_data) / world_size)
        batches_per_epoch = max(1, math.ceil(samples_per_rank / config.batch_size))
        steps_per_epoch = math.ceil(batches_per_epoch / config.accumulation_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _schedule(steps_per_epoch * config.epochs, config.warmup_fraction, config.min_lr_fraction)
        )
        scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)

        history: list[EpochMetrics] = []
        start_epoch = 1
        higher_is_better = config.monitor == "val_nssim"
        best_score = -math.inf if higher_is_better else math.inf
        best_epoch, bad_epochs = 0, 0
        best_state = copy.deepcopy(model.unet.state_dict())
        if resume_state is not None:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            scaler.load_state_dict(resume_state["scaler"])
            _restore_rng(resume_state["rng"])
            history = [EpochMetrics(**h) for h in resume_state["history"]]
            start_epoch = int(resume_state["epoch"]) + 1
            best_epoch, best_score = int(resume_state["best_epoch"]), float(resume_state["best_score"])
            bad_epochs = int(resume_state["bad_epochs"])
            best_path = checkpoint_dir / BEST_MODEL
            if best_epoch == start_epoch - 1:
                # the checkpoint's own weights are the best; best.pt, written after it, may not have been
                best_state = copy.deepcopy(model.unet.state_dict())
                if main:
                    best_card = _model_card(card, _best(history, best_epoch), physics)
                    atomic_torch_save(TrainedModel(model.unet, best_card).payload(), best_path)
                    writes += 1
            elif best_path.exists():
                best_state = TrainedModel.from_payload(safe_torch_load(best_path)).network.state_dict()
            if main:
                logger.info("resuming from %s after epoch %d", last_path, start_epoch - 1)
                if start_epoch > config.epochs:
                    logger.warning(
                        "%s already holds epoch %d of the %d asked for: nothing left to train "
                        "(raise training.epochs to train longer, or set training.resume: false to start over)",
                        last_path,
                        start_epoch - 1,
                        config.epochs,
                    )

        memory = _MemoryPeak(device)
        stopped_early = False
        voxels_per_patch = int(np.prod(train_data.store.patch_size_zyx))
        for epoch in range(start_epoch, config.epochs + 1):
            started = time.perf_counter()
            memory.reset()
            model.train()
            train_data.set_epoch(epoch)
            if distributed:
                sampler: Any = DistributedSampler(
                    train_data, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed
                )
                sampler.set_epoch(epoch)
            else:
                sampler = RandomSampler(train_data, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
            loader = DataLoader(
                train_data,
                batch_size=config.batch_size,
                sampler=sampler,
                num_workers=config.num_workers,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
            total_loss = total_consistency = 0.0
            seen = 0
            n_batches = len(loader)
            optimizer.zero_grad(set_to_none=True)
            batches = track(
                loader, f"epoch {epoch}/{config.epochs}", unit="batch", summary=False, enabled=main
            )  # the epoch's own log line is the summary
            for step, batch in enumerate(batches):
                single_view = batch[0].to(device, non_blocking=True)
                target = batch[1].to(device, non_blocking=True)
                geometry = batch[2].to(device, non_blocking=True) if physics_on else None
                group = step // config.accumulation_steps
                group_size = min(config.accumulation_steps, n_batches - group * config.accumulation_steps)
                last_of_group = (step + 1) % config.accumulation_steps == 0 or step + 1 == n_batches
                sync = contextlib.nullcontext() if (last_of_group or not distributed) else wrapped.no_sync()
                with sync:
                    with precision.autocast(device):
                        prediction, reconstructed = wrapped(single_view, geometry)
                    loss = image_loss(prediction, target, config.loss)
                    if reconstructed is not None:
                        consistency = torch.nn.functional.l1_loss(reconstructed, single_view.float())
                        loss = loss + config.physics.weight * consistency
                        total_consistency += float(consistency.detach()) * len(single_view)
                    scaler.scale(loss / group_size).backward()
                if last_of_group:
                    if config.grad_clip is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                total_loss += float(loss.detach()) * len(single_view)
                seen += len(single_view)
                memory.sample()
            train_time = time.perf_counter() - started
            val = _validate(model, val_data, config, device, precision=precision, physics_on=physics_on)
            memory.sample()
            epoch_time = time.perf_counter() - started
            patches = seen * world_size
            metrics = EpochMetrics(
                epoch=epoch,
                train_loss=total_loss / max(1, seen),
                val_loss=val["loss"],
                val_ssim=val["ssim"],
                val_ssim_input=val["ssim_input"],
                val_nssim=val["nssim"],
                learning_rate=float(optimizer.param_groups[0]["lr"]),
                epoch_time_s=epoch_time,
                patches_per_s=patches / train_time,
                voxels_per_s=patches * voxels_per_patch / train_time,
                peak_rss_mb=memory.rss / 2**20,
                peak_device_mb=memory.device_mb(),
                train_consistency=total_consistency / seen if physics_on and seen else float("nan"),
            )
            history.append(metrics)
            score = metrics.val_nssim if higher_is_better else metrics.val_loss
            improved = score > best_score if higher_is_better else score < best_score
            if improved or best_epoch == 0:
                best_score, best_epoch, bad_epochs = score, epoch, 0
                best_state = copy.deepcopy(model.unet.state_dict())
            else:
                bad_epochs += 1
            if main:
                # the checkpoint first: a kill between the two writes leaves no best.pt ahead of it
                atomic_torch_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "epoch": epoch,
                        "unet_config": unet_config.model_dump(mode="json"),
                        "training_config": config.model_dump(mode="json"),
                        "model": model.unet.state_dict(),
                        "physics": physics.state_dict() if physics is not None else None,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": _rng_state(),
                        "history": [asdict(h) for h in history],
                        "best_epoch": best_epoch,
                        "best_score": best_score,
                        "bad_epochs": bad_epochs,
                    },
                    last_path,
                )
                writes += 1
                if improved or best_epoch == epoch:
                    atomic_torch_save(
                        TrainedModel(model.unet, _model_card(card, metrics, physics)).payload(),
                        checkpoint_dir / BEST_MODEL,
                    )
                    writes += 1
                _log_epoch(metrics, config.epochs, [m.epoch_time_s for m in history[-(epoch - start_epoch + 1) :]])
                if epoch_callback is not None:
                    epoch_callback(metrics)
            if distributed:
                dist.barrier()
            if config.early_stopping_patience and bad_epochs >= config.early_stopping_patience:
                stopped_early = True
                if main:
                    logger.info("early stopping: no improvement of %s for %d epochs", config.monitor, bad_epochs)
                break

        model.unet.load_state_dict(best_state)
        trained = TrainedModel(UNet3D(unet_config), _model_card(card, _best(history, best_epoch), physics))
        trained.network.load_state_dict(model.unet.state_dict())
        digests, writes_per_rank = [_weights_digest(model.unet)], [writes]
        if distributed:
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, (digests[0], writes))
            digests = [g[0] for g in gathered]
            writes_per_rank = [g[1] for g in gathered]
        result = TrainingResult(
            model=trained,
            history=history,
            best_epoch=best_epoch,
            stopped_early=stopped_early,
            physics=physics.describe() if physics is not None else {},
            writes_per_rank=writes_per_rank,
            weight_digests=digests,
        )
        if distributed and not launched and main:
            atomic_torch_save(
                {
                    "model": trained.payload(),
                    "history": [asdict(h) for h in history],
                    "best_epoch": best_epoch,
                    "stopped_early": stopped_early,
                    "physics": result.physics,
                    "writes_per_rank": writes_per_rank,
                    "weight_digests": digests,
                },
                checkpoint_dir / SPAWN_RESULT,
            )
        if distributed:
            dist.barrier()  # no rank tears down its process group while another still talks to it
        return result
    finally:
        if distributed and dist.is_initialized():
            # DDP's reducer holds the process group; left to the interpreter's final
            # garbage collection, gloo's threads are destroyed during finalisation
            # and the worker aborts ("terminate called without an active exception").
            wrapped = None
            gc.collect()
            dist.destroy_process_group()


def _best(history: list[EpochMetrics], best_epoch: int) -> EpochMetrics | None:
    return next((h for h in history if h.epoch == best_epoch), history[-1] if history else None)


def _model_card(card: ModelCard, metrics: EpochMetrics | None, physics: SingleViewForwardModel | None) -> ModelCard:
    """The card with the chosen epoch's validation metrics and the fitted forward model."""
    validation = None
    if metrics is not None:
        validation = ValidationSummary(
            epoch=metrics.epoch, val_nssim=metrics.val_nssim, val_ssim=metrics.val_ssim, val_loss=metrics.val_loss
        )
    return card.model_copy(
        update={"validation": validation, "physics": physics.describe() if physics is not None else None}
    )


def _validate(
    model: FusionModel,
    data: Any,
    config: TrainingConfig,
    device: torch.device,
    *,
    precision: Precision,
    physics_on: bool,
) -> dict[str, float]:
    """Loss, SSIM and N_SSIM (challenge formula, input as reference) over the validation patches."""
    model.eval()
    loader = DataLoader(data, batch_size=config.batch_size, sampler=SequentialSampler(data), num_workers=0)
    loss_sum = ssim_sum = ssim_input_sum = 0.0
    count = 0
    with torch.no_grad():
        for batch in loader:
            single_view, target = batch[0].to(device), batch[1].to(device)
            geometry = batch[2].to(device) if physics_on else None
            with precision.autocast(device):
                prediction, reconstructed = model(single_view, geometry)
            loss = image_loss(prediction, target, config.loss)
            if reconstructed is not None:
                loss = loss + config.physics.weight * torch.nn.functional.l1_loss(reconstructed, single_view.float())
            loss_sum += float(loss) * len(single_view)
            ssim_sum += float(ssim3d(prediction, target).sum())
            ssim_input_sum += float(ssim3d(single_view, target).sum())
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


def _log_epoch(metrics: EpochMetrics, epochs: int, epoch_times: list[float]) -> None:
    """One line per epoch, with an ETA from this run's mean epoch time."""
    remaining = (epochs - metrics.epoch) * float(np.mean(epoch_times))
    logger.info(
        "epoch %d/%d  train %.4f  val %.4f  SSIM %.4f (input %.4f)  N_SSIM %.4f  lr %.2e | %.1f s, "
        "%.1f patches/s, ETA %s, peak RSS %.0f MB",
        metrics.epoch,
        epochs,
        metrics.train_loss,
        metrics.val_loss,
        metrics.val_ssim,
        metrics.val_ssim_input,
        metrics.val_nssim,
        metrics.learning_rate,
        metrics.epoch_time_s,
        metrics.patches_per_s,
        time.strftime("%H:%M:%S", time.gmtime(remaining)) if remaining < 86400 else f"{remaining / 3600:.0f} h",
        metrics.peak_rss_mb,
    )
