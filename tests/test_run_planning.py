"""fusemycell.run_planning: which inputs are missing and the one command that makes them, without Kedro."""

from __future__ import annotations

import pytest

from fusemycell.errors import UserError
from fusemycell.run_planning import MissingInputError, PipelineShape, check_inputs, find_missing, hint_command

PIPELINES = {
    "simulation": PipelineShape(frozenset({"params:simulation"}), frozenset({"raw_pairs"})),
    "preprocessing": PipelineShape(frozenset({"raw_pairs"}), frozenset({"normalized_volumes", "volume_split"})),
    "patching": PipelineShape(frozenset({"normalized_volumes", "volume_split"}), frozenset({"patch_store_train"})),
    "training": PipelineShape(frozenset({"patch_store_train", "params:training"}), frozenset({"trained_model"})),
    "inference": PipelineShape(frozenset({"inference_inputs", "inference_model"}), frozenset({"inference_outputs"})),
}
DEFAULT_LOCATIONS = {
    "raw_pairs": "data/01_raw/synthetic",
    "inference_inputs": "data/01_raw/synthetic",
    "trained_model": "data/06_models/fusemycell_unet.pt",
    "inference_model": "data/06_models/fusemycell_unet.pt",
}


class Facts:
    """A catalog in which only ``present`` exists; ``mine`` are the user's own locations."""

    def __init__(self, present=(), locations=None, mine=()):
        self.present, self.mine = set(present), set(mine)
        self.locations = {**DEFAULT_LOCATIONS, **(locations or {})}

    def exists(self, name):
        return name in self.present

    def location(self, name):
        return self.locations.get(name)

    def user_chosen(self, name):
        return name in self.mine


def test_a_missing_input_brings_every_pipeline_upstream_of_it_in_data_flow_order():
    missing, chain = find_missing(PIPELINES["training"].inputs, PIPELINES, Facts())
    assert [m.name for m in missing] == ["patch_store_train"]  # the run's own input, not the upstream ones
    assert chain == ["simulation", "preprocessing", "patching"]


def test_what_exists_stops_the_chain():
    _, chain = find_missing(PIPELINES["training"].inputs, PIPELINES, Facts(present={"raw_pairs"}))
    assert chain == ["preprocessing", "patching"]


def test_the_model_applied_by_default_is_the_one_training_makes():
    facts = Facts(present={"raw_pairs", "inference_inputs"})
    missing, chain = find_missing(PIPELINES["inference"].inputs, PIPELINES, facts)
    assert {m.name: m.producer for m in missing} == {"inference_model": "training"}
    assert chain == ["preprocessing", "patching", "training"]
    facts.locations["inference_model"] = "elsewhere.pt"  # not the trained model's file: nothing makes it
    assert [m.producer for m in find_missing(PIPELINES["inference"].inputs, PIPELINES, facts)[0]] == [None]


def test_the_users_own_model_is_never_made_by_a_pipeline():
    facts = Facts(present={"inference_inputs"}, locations={"inference_model": "/me/model.pt"}, mine={"inference_model"})
    with pytest.raises(
        MissingInputError, match=r"inference_model \(/me/model\.pt\) not found: check inference\.model_uri"
    ):
        check_inputs(PIPELINES["inference"].inputs, PIPELINES, facts, {"pipeline_names": ["inference"]})


def test_the_message_names_the_whole_command_with_the_users_options():
    run_params = {"pipeline_names": ["training"], "env": "mac", "runtime_params": {"raw_dir": "data/mine"}}
    with pytest.raises(MissingInputError) as raised:
        check_inputs(PIPELINES["training"].inputs, PIPELINES, Facts(), run_params)
    expected = "'kedro run --pipelines simulation,preprocessing,patching,training --env mac --params raw_dir=data/mine'"
    assert str(raised.value) == f"patch_store_train not found yet: run {expected}"


def test_a_default_the_user_may_point_elsewhere_is_named_in_each_commands_words():
    """The default model is missing: the command that trains it keeps the user's folders, or another model."""
    facts = Facts(present={"raw_pairs", "inference_inputs"})
    runtime = {"inference": {"input_dir": "/in/stack.tif", "output_dir": "/out"}}
    run_params = {"pipeline_names": ["inference"], "env": "test", "runtime_params": runtime}
    with pytest.raises(MissingInputError) as raised:
        check_inputs(PIPELINES["inference"].inputs, PIPELINES, facts, run_params)
    command = (
        "'kedro run --pipelines preprocessing,patching,training,inference --env test "
        "--params inference.input_dir=/in/stack.tif,inference.output_dir=/out'"
    )
    assert str(raised.value).endswith(
        f"not found yet: run {command}, or choose another: --params inference.model_uri=PATH"
    )
    assert raised.value.message({"inference.model_uri": "--model"}).endswith(", or choose another: --model")
    assert isinstance(raised.value, UserError)


def test_nothing_missing_is_nothing_to_say():
    check_inputs(PIPELINES["training"].inputs, PIPELINES, Facts(present={"patch_store_train"}), {})
    assert hint_command(["a", "b", "a"]) == "'kedro run --pipelines a,b'"
