"""The model card training derives from its patch stores (fusemycell.training.stores) with position channels."""

import pytest

from fusemycell.patching.store import PatchStore, PatchStoreError
from fusemycell.position import CHANNEL_DESCRIPTIONS, PositionChannels
from fusemycell.training.config import TrainingConfig
from fusemycell.training.stores import card_for_stores
from tests.patching.conftest import position_store, textured_ellipsoid

SPACING = (1.0, 0.5, 0.5)


def _store(directory, position):
    directory.parent.mkdir(parents=True, exist_ok=True)
    volume = textured_ellipsoid((12, 40, 36), seed=len(str(directory)))
    return PatchStore(
        position_store(directory, volume, SPACING, [(0, 0, 0), (4, 8, 8)], (8, 16, 16), position=position)
    )


@pytest.mark.parametrize("channels", [("surface_distance", "depth_z", "depth_x"), ("depth_x", "surface_distance")])
def test_card_lists_the_stores_channels_in_order_and_sets_in_channels(tmp_path, channels):
    position = PositionChannels(enabled=True, channels=channels)
    train, val = _store(tmp_path / "t" / "train", position), _store(tmp_path / "v" / "val", position)
    card = card_for_stores(TrainingConfig(), train, val)
    assert [c.name for c in card.input_channels] == ["single_view", *channels]
    assert [c.description for c in card.input_channels[1:]] == [CHANNEL_DESCRIPTIONS[c] for c in channels]
    assert card.architecture.in_channels == 1 + len(channels)
    assert card.position == position
    assert card.architecture.spacing_zyx == SPACING


def test_stores_without_position_give_a_single_view_card(tmp_path):
    off = PositionChannels(enabled=False)
    card = card_for_stores(TrainingConfig(), _store(tmp_path / "t" / "train", off), _store(tmp_path / "v" / "val", off))
    assert card.position is None and card.architecture.in_channels == 1
    assert [c.name for c in card.input_channels] == ["single_view"]


def test_stores_cut_with_different_position_channels_are_refused(tmp_path):
    train = _store(tmp_path / "t" / "train", PositionChannels(enabled=True))
    val = _store(tmp_path / "v" / "val", PositionChannels(enabled=False))
    with pytest.raises(PatchStoreError, match="different position channels") as error:
        card_for_stores(TrainingConfig(), train, val)
    assert str(train.directory) in str(error.value) and "kedro run --pipelines patching" in str(error.value)
