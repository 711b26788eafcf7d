"""Nodes of the training pipeline: thin wrappers around :mod:`fusemycell.training`."""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fusemycell.inference.predictor import predict_whole_volume
from fusemycell.inference.settings import InferenceSettings
from fusemycell.io.pairs import PairListing
from fusemycell.models.domain import TrainingDomain, domain_of_pairs
from fusemycell.models.model_file import TrainedModel
from fusemycell.parameters import Validated
from fusemycell.patching.store import PatchStore
from fusemycell.tracking import EpochMetricsLogger, RunLogger, log_metrics
from fusemycell.training.config import TrainingConfig
from fusemycell.training.engine import train
from fusemycell.training.figures import learning_curves, validation_figure
from fusemycell.training.guard import guard_model
from fusemycell.training.stores import card_for_stores, store_manifest
from fusemycell.training.validation_volumes import VolumeValidation, read_validation_volumes

logger = logging.getLogger(__name__)


def validation_pairs(normalized_volumes: PairListing, volume_split: pd.DataFrame) -> tuple[tuple[str, ...], ...]:
    """``(name, channel, angle path, fused path, study)`` of the split's validation volumes (preprocessed)."""
    validation = volume_split[volume_split["split"] == "val"]
    return tuple(
        (
            row.pair,
            row.channel,
            normalized_volumes[row.pair].angle,
            normalized_volumes[row.pair].fused,
            str(getattr(row, "study", "")),
        )
        for row in validation.itertuples()
        if row.pair in normalized_volumes and normalized_volumes[row.pair].is_complete
    )


def describe_training_domain(fingerprint: dict[str, Any], volume_split: pd.DataFrame) -> dict[str, Any]:
    """The training domain (:mod:`fusemycell.models.domain`) of the split's training and validation single views.

    Voxel sizes, shapes, raw percentiles and the noise all come from the preprocessing fingerprint (no
    file is read). An empty dict when no volume could be described.
    """
    used = volume_split[volume_split["split"].isin(["train", "val"])]
    domain = domain_of_pairs(fingerprint.get("volumes", []), used["pair"].astype(str))
    if domain is None:
        logger.warning("training domain: no readable training volume in the fingerprint; inputs will not be checked")
        return {}
    return domain.model_dump(mode="json")


def with_training_domain(model: TrainedModel, training_domain: dict[str, Any]) -> TrainedModel:
    """``model`` whose card records ``training_domain`` (unchanged when it is empty)."""
    if not training_domain:
        return model
    domain = TrainingDomain.model_validate(training_domain)
    return TrainedModel(model.network, model.card.model_copy(update={"training_domain": domain}))


def _inference_prediction(settings: InferenceSettings) -> partial:
    """How training and the guard predict a whole volume: as inference does (picklable, for DDP workers)."""
    return partial(predict_whole_volume, tiling=settings.tile_settings, amp=settings.amp)


def train_fusion_model(
    patch_store_train: PatchStore,
    patch_store_val: PatchStore,
    *,
    normalized_volumes: PairListing,
    volume_split: pd.DataFrame,
    training_domain: dict[str, Any],
    training: Validated[TrainingConfig],
    inference: Validated[InferenceSettings],
) -> tuple[TrainedModel, pd.DataFrame, Figure]:
    """Train the 3D U-Net; returns the best model, the per-epoch history and validation slices.

    Normalisation, crop policy, resampling, augmentation and position channels come from the
    patch store's manifest, not from a second copy of the parameters. After every epoch the whole
    validation volumes of the split are predicted with the inference tiling (``params:inference``)
    and scored with the challenge's N_SSIM (``val_volume_nssim``, what ``training.monitor``
    chooses the best epoch by). Per-epoch metrics go to the MLflow run of this ``kedro run``
    with ``step = epoch``. The card records ``training_domain`` (:func:`describe_training_domain`).
    """
    config, settings = training, inference
    _, augmentation = store_manifest(patch_store_train)
    run = RunLogger.current()
    # scored every epoch only when they choose it: with another monitor they would cost budget for nothing
    pairs = validation_pairs(normalized_volumes, volume_split) if config.monitor == "val_volume_nssim" else ()
    result = train(
        config,
        patch_store_train.directory,
        patch_store_val.directory,
        augmentation=augmentation,
        epoch_callback=EpochMetricsLogger(run) if run is not None else None,
        card=card_for_stores(config, patch_store_train, patch_store_val),
        volumes=VolumeValidation(pairs, _inference_prediction(settings)) if pairs else None,
    )
    best = next(h for h in result.history if h.epoch == result.best_epoch)
    logger.info(
        "best epoch %d by %s: whole validation volumes N_SSIM %.4f, patches N_SSIM %.4f (SSIM %.4f, input %.4f)%s",
        best.epoch,
        config.monitor,
        best.val_volume_nssim,
        best.val_nssim,
        best.val_ssim,
        best.val_ssim_input,
        ", stopped early" if result.stopped_early else "",
    )
    log_metrics(
        {
            "best_epoch": best.epoch,
            "best_val_nssim": best.val_nssim,
            "best_val_ssim": best.val_ssim,
            "best_val_volume_nssim": best.val_volume_nssim,
        }
    )
    if result.physics:
        log_metrics({f"physics.{key}": value for key, value in result.physics.items()})
    history = pd.DataFrame([asdict(h) for h in result.history])
    history["kept"] = history["epoch"] == result.best_epoch  # the epoch whose weights are the model
    model = with_training_domain(result.model, training_domain)
    return model, history, validation_figure(model, patch_store_val, epoch=result.best_epoch)


def guard_fusion_model(
    unguarded_model: TrainedModel,
    normalized_volumes: PairListing,
    volume_split: pd.DataFrame,
    training: Validated[TrainingConfig],
    inference: Validated[InferenceSettings],
) -> TrainedModel:
    """Scale the learnt correction per channel, as far as no validation study of the channel falls below its base.

    The validation volumes of the split are predicted with the inference tiling
    (``params:inference``: tile, overlap, batch size, device); see :mod:`fusemycell.training.guard`.
    ``training.guard: false`` keeps the network as trained.
    """
    config, settings = training, inference
    if not config.guard:
        logger.info("guard: off (training.guard: false); the correction is kept as trained")
        return unguarded_model
    pairs = validation_pairs(normalized_volumes, volume_split)
    if not pairs:
        logger.warning("guard: no validation volume in the split; the correction is kept as trained")
        return unguarded_model
    guarded, choice = guard_model(
        unguarded_model,
        read_validation_volumes(pairs, unguarded_model.card.position),
        predict=_inference_prediction(settings),
        device=settings.device,
    )
    if choice is not None:
        log_metrics(
            {
                "guard.scale": choice.scale,
                **{f"guard.scale.{channel}": scale for channel, scale in choice.scale_by_channel.items()},
                **{f"guard.val_nssim.{s:g}": choice.score(s) for s in choice.scales},
                **{f"guard.val_nssim.study_{k}": v for k, v in choice.by_study().items()},
            }
        )
    return guarded


def plot_learning_curves(training_history: pd.DataFrame) -> Figure:
    """Loss and validation N_SSIM per epoch, the kept epoch marked (the history's ``kept`` column)."""
    return learning_curves(training_history)


def export_onnx_model(trained_model: TrainedModel) -> TrainedModel:
    """Hand the model to the ONNX dataset, which exports it with dynamic spatial axes and the model's identity.

    The export records a digest of the model's card and weights (``fusemycell_model_digest``), so inference
    uses it only with this model. Run alone (``--nodes training.export_onnx_model``), it exports the
    catalog's ``trained_model`` again.
    """
    return trained_model
