"""The model card's input-channel contract (fusemycell.models.card) with position channels."""

import pytest
from pydantic import ValidationError

from fusemycell.models.card import InputChannel, ModelCard, card_for
from fusemycell.models.config import UNetConfig
from fusemycell.position import PositionChannels

VIEW = InputChannel(name="single_view", description="the single view")


def _channels(*names):
    return (VIEW, *(InputChannel(name=n, description=n) for n in names))


def test_a_position_card_lists_one_channel_per_network_input_and_round_trips():
    position = PositionChannels(enabled=True, channels=("surface_distance", "depth_z"))
    card = card_for(
        UNetConfig(in_channels=3), (8, 16, 16), input_channels=_channels(*position.channels), position=position
    )
    assert card.position == position and card.architecture.in_channels == 3
    assert [c.name for c in card.input_channels] == ["single_view", "surface_distance", "depth_z"]
    assert ModelCard.model_validate_json(card.model_dump_json()) == card


def test_a_card_without_position_takes_the_single_view_alone():
    card = card_for(UNetConfig(), (8, 16, 16))
    assert card.position is None and len(card.input_channels) == 1
    # disabled channels count for none
    assert card_for(UNetConfig(), (8, 16, 16), position=PositionChannels(enabled=False)).architecture.in_channels == 1


def test_a_network_that_does_not_take_the_position_channels_is_refused():
    # three position channels, but the network takes two inputs (the card lists two)
    with pytest.raises(ValidationError, match=r"takes 2 input channels.*make 4"):
        card_for(
            UNetConfig(in_channels=2),
            (8, 16, 16),
            input_channels=_channels("depth_z"),
            position=PositionChannels(enabled=True),
        )
    # position channels configured but a single-view network
    with pytest.raises(ValidationError, match=r"takes 1 input channels.*make 4"):
        card_for(UNetConfig(), (8, 16, 16), position=PositionChannels(enabled=True))
    # a four-input network without position settings: inference could not build its inputs
    with pytest.raises(ValidationError, match=r"takes 4 input channels.*make 1"):
        card_for(UNetConfig(in_channels=4), (8, 16, 16), input_channels=_channels("a", "b", "c"))


def test_the_listed_channels_must_match_the_network():
    with pytest.raises(ValidationError, match="lists 1 input channels, the network takes 4"):
        card_for(UNetConfig(in_channels=4), (8, 16, 16), position=PositionChannels(enabled=True))
