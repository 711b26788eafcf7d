"""What training reads from the patch stores: voxel size, the manifest's contract, the model card it implies."""

from __future__ import annotations

from fusemycell.models.card import InputChannel, ModelCard, PreprocessingContract, TrainingDataSummary, card_for
from fusemycell.patching.config import AugmentationParams
from fusemycell.patching.store import PatchStore, PatchStoreError
from fusemycell.position import CHANNEL_DESCRIPTIONS
from fusemycell.training.config import TrainingConfig

_AXES = "zyx"


def store_spacing(store: PatchStore) -> tuple[float, float, float]:
    """Median voxel size of the patches' volumes (1 um when the index has none)."""
    columns = [f"spacing_{a}_um" for a in _AXES]
    if not set(columns) <= set(store.index.columns):
        return (1.0, 1.0, 1.0)
    return tuple(float(v) for v in store.index[columns].median())  # type: ignore[return-value]


def store_manifest(store: PatchStore) -> tuple[PreprocessingContract, AugmentationParams]:
    """The preprocessing contract and the augmentation a store's manifest (``store.json``) carries.

    Raises
    ------
    PatchStoreError
        Naming the store when its manifest has neither (written by an older fusemycell).
    """
    description = store.description
    if "preprocessing" not in description or "augmentation" not in description:
        raise PatchStoreError(
            f"{store.directory}: store.json carries no preprocessing contract (written by an older fusemycell); "
            "run 'kedro run --pipelines patching' again"
        )
    return (
        PreprocessingContract.model_validate(description["preprocessing"]),
        AugmentationParams.model_validate(description["augmentation"]),
    )


def data_summary(train: PatchStore, val: PatchStore) -> TrainingDataSummary:
    """A fingerprint of the volumes both stores were cut from."""
    index = [store.index for store in (train, val)]
    rows = [frame for frame in index if len(frame)]

    def distinct(prefix: str, cast: type) -> tuple:
        columns = [f"{prefix}{a}" + ("_um" if cast is float else "") for a in _AXES]
        found = {
            tuple(cast(v) for v in row) for frame in rows if set(columns) <= set(frame) for row in frame[columns].values
        }
        return tuple(sorted(found))

    return TrainingDataSummary(
        volumes=len({pair for frame in rows for pair in frame["pair"]}),
        studies=tuple(sorted({str(s) for frame in rows if "study" in frame for s in frame["study"].fillna("")})),
        channels=tuple(sorted({str(c) for frame in rows if "channel" in frame for c in frame["channel"]})),
        acquisition_spacings_zyx=distinct("acquisition_spacing_", float),
        shapes_zyx=distinct("size_", int),
        train_patches=len(train),
        val_patches=len(val),
    )


def card_for_stores(config: TrainingConfig, train: PatchStore, val: PatchStore) -> ModelCard:
    """The model card of a network trained on these stores (validation and physics filled in by training)."""
    contract, _ = store_manifest(train)
    position = train.position
    if position != val.position:
        raise PatchStoreError(
            f"{train.directory} and {val.directory} were cut with different position channels; "
            "run 'kedro run --pipelines patching' again"
        )
    channels = [InputChannel(name="single_view", description="the single-view acquisition, percentile-normalised")] + [
        InputChannel(name=name, description=CHANNEL_DESCRIPTIONS[name]) for name in position.channels[: position.count]
    ]
    return card_for(
        config.model.model_copy(update={"spacing_zyx": store_spacing(train), "in_channels": len(channels)}),
        train.patch_size_zyx,
        preprocessing=contract,
        training_data=data_summary(train, val),
        input_channels=tuple(channels),
        position=position if position.enabled else None,
    )
