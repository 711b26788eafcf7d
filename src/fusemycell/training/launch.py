"""How a training run's processes are started: joined to a launcher, spawned here, or one process.

* a launcher already set ``RANK``/``WORLD_SIZE`` (torchrun, SLURM): this process is one rank of it;
* ``devices > 1``: spawn that many workers (``torch.multiprocessing.spawn``); rank 0 hands its result
  back through a file in the checkpoint folder (:data:`SPAWN_RESULT`);
* otherwise: train in this process.

What each process runs is given (``run_process``): a module-level function, since a spawned worker
receives it pickled, with the job.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from fusemycell.devices import resolve_world_size
from fusemycell.models.model_file import TrainedModel, atomic_torch_save, safe_torch_load
from fusemycell.training.checkpoint import EpochMetrics
from fusemycell.training.state import TrainingJob, TrainingResult

logger = logging.getLogger(__name__)

SPAWN_RESULT = "result.pt"

#: One process of a run: ``(job, rank) -> its result`` (rank 0's is the run's).
ProcessRun = Callable[[TrainingJob, int], "TrainingResult | None"]


def launch(job: TrainingJob, device: torch.device, run_process: ProcessRun) -> TrainingResult:
    """Run ``job`` in as many processes as it asks for (on ``device``'s kind); the result of rank 0."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        job = replace(job, world_size=int(os.environ["WORLD_SIZE"]), launched=True)
        return run_process(job, int(os.environ["RANK"]))  # type: ignore[return-value]
    world_size = resolve_world_size(job.config.devices, device)
    if world_size == 1:
        return run_process(job, 0)  # type: ignore[return-value]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    logger.info("training on %d %s processes (DDP, spawned)", world_size, device.type)
    spawned = replace(job, world_size=world_size)
    torch.multiprocessing.spawn(_spawned, args=(spawned, run_process), nprocs=world_size, join=True)
    return read_spawn_result(Path(job.config.checkpoint_dir) / SPAWN_RESULT)


def _spawned(rank: int, job: TrainingJob, run_process: ProcessRun) -> None:
    run_process(job, rank)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def hands_back_result(job: TrainingJob, rank: int) -> bool:
    """Whether this process writes the run's result for the process that spawned it (rank 0 of a spawned run)."""
    return job.world_size > 1 and not job.launched and rank == 0


def save_spawn_result(result: TrainingResult, folder: str | os.PathLike) -> Path:
    """Rank 0 of a spawned run: the result, for the process that spawned it (tensors and plain values)."""
    payload = {
        "model": result.model.payload(),
        "history": [asdict(h) for h in result.history],
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "physics": result.physics,
        "ended_by": result.ended_by,
    }
    return atomic_torch_save(payload, Path(folder) / SPAWN_RESULT)


def read_spawn_result(path: str | os.PathLike) -> TrainingResult:
    """The result rank 0 of a spawned run saved."""
    payload = safe_torch_load(path, give=None)  # the run's own file: the user named no setting for it
    return TrainingResult(
        model=TrainedModel.from_payload(payload["model"], source=str(path), give=None),
        history=[EpochMetrics(**h) for h in payload["history"]],
        best_epoch=int(payload["best_epoch"]),
        stopped_early=bool(payload["stopped_early"]),
        physics=dict(payload["physics"]),
        ended_by=str(payload.get("ended_by", "epochs")),
    )
