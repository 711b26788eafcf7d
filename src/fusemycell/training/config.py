"""Typed, validated parameters of the training engine (``params:training``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fusemycell.configuration import StrictConfig
from fusemycell.models.config import UNetConfig


class LossWeights(StrictConfig):
    """Weights of the image losses (they are summed)."""

    l1: float = Field(default=0.5, ge=0)
    """Mean absolute error."""
    mse: float = Field(default=0.0, ge=0)
    """Mean squared error."""
    ssim: float = Field(default=1.0, ge=0)
    """``1 - SSIM`` (3D, 7-voxel uniform window, computed in float32 even under AMP)."""

    @model_validator(mode="after")
    def _something(self) -> LossWeights:
        if self.l1 + self.mse + self.ssim <= 0:
            raise ValueError("at least one of l1, mse, ssim must have a positive weight")
        return self


class PhysicsParams(StrictConfig):
    """Forward-model consistency ``|A(prediction) - input|`` (see :mod:`fusemycell.training.physics`)."""

    enabled: bool = False
    """Add the consistency term to the loss."""
    weight: float = Field(default=0.1, ge=0)
    """Weight of the consistency term."""
    learn: bool = True
    """Learn the forward model's parameters jointly with the network (else keep them fixed after fitting)."""
    fit_steps: int = Field(default=100, ge=0)
    """Optimiser steps fitting ``A(fused) ~ angle`` on training pairs before training."""
    illumination_attenuation_um: float = Field(default=50.0, gt=0)
    """Initial e-folding length of the light sheet along the illumination axis (x)."""
    detection_attenuation_um: float = Field(default=50.0, gt=0)
    """Initial e-folding length of the emission along the detection axis (z)."""
    blur_growth_per_um: float = Field(default=0.02, ge=0)
    """Initial lateral blur sigma added per micrometre of depth along z."""


class TrainingConfig(StrictConfig):
    """Everything the training engine needs."""

    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """``auto``: CUDA, then MPS (where a tiny operation works), then CPU."""
    devices: int | Literal["all"] = 1
    """Processes/GPUs of one run; above 1 the engine runs DDP itself. ``all`` = every visible GPU."""
    batch_size: int = Field(default=4, ge=1)
    """Patches per step and per device."""
    accumulation_steps: int = Field(default=1, ge=1)
    """Optimizer step every N batches: effective batch = N x batch_size x devices."""
    amp: bool = True
    """Mixed precision where the device gains from it (CUDA: bf16 or fp16 + GradScaler; MPS: fp16)."""
    amp_dtype: Literal["auto", "bfloat16", "float16"] = "auto"
    """Precision under AMP; ``auto`` = bf16 where supported, else fp16."""
    epochs: int = Field(default=20, ge=1)
    """Epochs to train; with ``budget_minutes``, the most."""
    budget_minutes: float | None = Field(default=None, gt=0)
    """Training time budget, counted from the first optimizer step, validation and checkpoints included:
    no step is taken that would end training past it, the best epoch is kept, and the learning-rate
    schedule is planned on the steps that fit (timed on the first few steps, then after every epoch).
    null = ``epochs``."""
    volume_validation_share: float = Field(default=0.15, gt=0, le=1)
    """With ``budget_minutes``: at most this share of the budget goes to validating whole volumes; they
    are validated paced over the time by their measured cost, and always on the last epoch."""
    patches_per_epoch: int | None = Field(default=None, ge=1)
    """Patches drawn (with replacement) per epoch and device, whatever the store's size; null = one
    pass over the store. With a budget, the work then no longer grows with the number of volumes."""
    learning_rate: float = Field(default=1e-3, gt=0)
    """Peak learning rate of AdamW."""
    weight_decay: float = Field(default=1e-4, ge=0)
    """AdamW weight decay."""
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1)
    """Share of optimizer steps with a linear warm-up, before the cosine decay."""
    min_lr_fraction: float = Field(default=0.02, ge=0, le=1)
    """Learning rate at the end of the cosine, as a fraction of the peak."""
    grad_clip: float | None = Field(default=1.0, gt=0)
    """Clip the gradient norm to this value; null = no clipping."""
    monitor: Literal["val_volume_nssim", "val_nssim", "val_loss"] = "val_volume_nssim"
    """Validation quantity that picks the best epoch and drives early stopping: ``val_volume_nssim``
    (the challenge's N_SSIM on whole validation volumes predicted with the inference tiling, mean
    per channel: the score the model is judged by), ``val_nssim`` (on validation patches: cheaper)
    or ``val_loss``."""
    guard: bool = True
    """Scale the learnt correction by what scores best on whole validation volumes (never below the
    residual base: :mod:`fusemycell.training.guard`); false = the network as trained."""
    early_stopping_patience: int = Field(default=0, ge=0)
    """Stop after this many epochs without improvement; 0 = never stop early."""
    num_workers: int = Field(default=0, ge=0)
    """DataLoader worker processes per device."""
    seed: int = 2025
    """Seed of weights, sampling and augmentation."""
    resume: bool = False
    """Continue from the last complete checkpoint in ``checkpoint_dir``."""
    checkpoint_dir: str = "data/06_models/checkpoints"
    """Where every epoch's checkpoint is written (atomically)."""
    max_val_patches: int | None = Field(default=None, ge=1)
    """Validate on at most this many patches (all when null)."""
    loss: LossWeights = LossWeights()
    physics: PhysicsParams = PhysicsParams()
    model: UNetConfig = UNetConfig()
    """The 3D U-Net; its ``spacing_zyx`` is replaced by the training patches' voxel size."""
