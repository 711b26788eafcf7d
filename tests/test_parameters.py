"""fusemycell.parameters: every key checked, the origin of every value named, one set of resolved paths."""

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from fusemycell.errors import UserError
from fusemycell.parameters import (
    RUN_LOCATIONS,
    ParameterError,
    ParameterOrigins,
    RunPaths,
    parameter_value,
    validate_parameters,
    with_command_line_lists,
)


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    (tmp_path / "conf" / "base").mkdir(parents=True)
    (tmp_path / "conf" / "mac").mkdir()
    (tmp_path / "conf" / "base" / "parameters_training.yml").write_text("training:\n  epochs: 3\n")
    (tmp_path / "conf" / "mac" / "parameters.yml").write_text(
        "training:\n  batch_size: 2\ninference:\n  overlap: 0.3\n"
    )
    return tmp_path / "conf"


def test_the_defaults_are_valid_and_typed():
    parameters = validate_parameters({})
    assert parameters.inference.overlap == 0.5 and parameters.training.model.depth >= 1  # typed groups, defaults in
    assert parameters.simulation is None  # no simulation without volumes to simulate
    with pytest.raises(ValidationError):  # frozen: a node cannot change what the others receive
        parameters.training.epochs = 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"inference": {"overlapp": 0.25}}, "inference.overlapp: unknown parameter; did you mean 'inference.overlap'?"),
        ({"trainng": {"epochs": 5}}, "trainng: unknown parameter; did you mean 'training'?"),
        ({"raw_dirr": "X"}, "raw_dirr: unknown parameter; did you mean 'raw_dir'?"),
        (
            {"training": {"model": {"deph": 3}}},
            "training.model.deph: unknown parameter; did you mean 'training.model.depth'?",
        ),
        ({"inference": {"zzz": 1}}, "inference.zzz: unknown parameter; valid keys here: "),
    ],
)
def test_unknown_keys_name_the_closest_valid_one(params, expected):
    with pytest.raises(ParameterError) as raised:
        validate_parameters(params)
    assert expected in str(raised.value)
    assert isinstance(raised.value, UserError)
    if "valid keys here" in expected:  # the keys of that group, in whatever order it declares them
        assert {"input_dir", "output_dir", "overlap"} <= set(str(raised.value).split(": ")[-1].split(", "))


@pytest.mark.parametrize("tile", [[0, 16, 16], [8, -1, 16]])
def test_tiles_must_be_positive(tile):
    with pytest.raises(
        ParameterError, match=r"inference\.tile_zyx\[\d\] = -?\d+: Input should be greater than or equal to 1"
    ):
        validate_parameters({"inference": {"tile_zyx": tile}})


def test_every_problem_is_listed_once(conf):
    with pytest.raises(ParameterError) as raised:
        validate_parameters({"training": {"epochs": 0}, "inference": {"overlap": 2, "typo": 1}})
    message = str(raised.value)
    assert message.startswith("invalid parameters (3 problems):")
    assert "training.epochs = 0" in message and "inference.overlap = 2" in message and "inference.typo" in message


def test_origins_name_the_environment_file_the_base_file_or_params(conf):
    origins = ParameterOrigins(conf, "base", "mac", {"inference": {"batch_size": 2}, "raw_dir": "X"})
    assert origins.origin(("training", "batch_size")) == "conf/mac/parameters.yml"
    assert origins.origin(("training", "epochs")) == "conf/base/parameters_training.yml"
    assert origins.origin(("inference", "overlap")) == "conf/mac/parameters.yml"
    assert origins.origin(("inference", "batch_size")) == "--params"
    assert origins.origin(("raw_dir",)) == "--params"
    assert origins.origin(("training", "nothing", "deeper")) == "conf/mac/parameters.yml"  # its group
    assert ParameterOrigins(conf, "base", "mac", {"training.epochs": 9}).origin(("training", "epochs")) == "--params"


def test_a_bad_value_names_its_origin(conf):
    origins = ParameterOrigins(conf, "base", "mac", {})
    with pytest.raises(ParameterError, match=r"training\.batch_size = 0 \(set in conf/mac/parameters\.yml\)"):
        validate_parameters({"training": {"batch_size": 0}}, origins)


def test_run_paths_apply_the_defaults_relative_to_the_project(tmp_path):
    paths = RunPaths.from_parameters(validate_parameters({}), tmp_path)
    assert paths.raw_dir == (tmp_path / "data" / "01_raw" / "synthetic").resolve()
    assert paths.inference_input == paths.raw_dir  # inference reads the raw folder unless told otherwise
    assert paths.inference_output == (tmp_path / "data" / "07_model_output" / "inference").resolve()
    assert paths.model_uri == str((tmp_path / "data" / "06_models" / "fusemycell_unet.pt").resolve())
    assert paths.onnx_path == str((tmp_path / "data" / "06_models" / "fusemycell_unet.onnx").resolve())


def test_run_paths_follow_links_and_trailing_slashes_and_keep_uris(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    params = validate_parameters(
        {"raw_dir": "link/", "inference": {"output_dir": "./out/", "model_uri": "runs:/abc/model/fusemycell_unet.pt"}}
    )
    paths = RunPaths.from_parameters(params, tmp_path)
    assert paths.raw_dir == (tmp_path / "real").resolve() and paths.inference_input == paths.raw_dir
    assert paths.inference_output == (tmp_path / "out").resolve()
    assert paths.model_uri == "runs:/abc/model/fusemycell_unet.pt"
    assert paths.onnx_path == "runs:/abc/model/fusemycell_unet.onnx"  # the export logged beside it
    resolved = paths.apply(validate_parameters({"raw_dir": "link/", "inference": {"overlap": 0.3}}))
    assert resolved.inference.overlap == 0.3 and resolved.inference.input_dir == str(paths.raw_dir)
    assert resolved.raw_dir == str(paths.raw_dir)


def test_every_run_location_is_resolved_once_checkpoints_included(tmp_path):
    params = validate_parameters({"training": {"checkpoint_dir": "runs/ckpt"}, "inference": {"model_uri": "m/x.pt"}})
    paths = RunPaths.from_parameters(params, tmp_path)
    resolved = paths.apply(params)
    assert resolved.training.checkpoint_dir == str((tmp_path / "runs" / "ckpt").resolve())
    assert resolved.inference.model_uri == str((tmp_path / "m" / "x.pt").resolve())
    assert resolved.inference.onnx_path == str((tmp_path / "m" / "x.onnx").resolve())
    for location in RUN_LOCATIONS:  # each declared location has its resolved value, absolute
        value = paths.location(location.parameter)
        assert Path(value).is_absolute(), location.parameter
        assert parameter_value(resolved, location.parameter) == value  # what the nodes receive


def test_parameter_values_are_found_by_their_dotted_name():
    parameters = validate_parameters({"training": {"model": {"depth": 3}}})
    assert parameter_value(parameters, "training.model.depth") == 3
    assert parameter_value(parameters, "training.model") is parameters.training.model
    with pytest.raises(KeyError):
        parameter_value(parameters, "training.nothing")


def test_a_linked_input_file_keeps_its_own_name(tmp_path):
    (tmp_path / "image_2_nucleus_angle.tif").write_bytes(b"")
    (tmp_path / "my_sample.tif").symlink_to(tmp_path / "image_2_nucleus_angle.tif")
    paths = RunPaths.from_parameters(validate_parameters({"inference": {"input_dir": "my_sample.tif"}}), tmp_path)
    assert paths.inference_input.name == "my_sample.tif"  # its prediction is named after it


@pytest.mark.parametrize(
    ("key", "word", "expected"),
    [
        ("inference.tile_zyx", "64x256x256", (64, 256, 256)),
        ("inference.tile_zyx", "64 256 256", (64, 256, 256)),
        ("preprocessing.resample.target_spacing_zyx", "1.0x0.6x0.6", (1.0, 0.6, 0.6)),
        ("patching.patch_size_zyx", "16X64X64", (16, 64, 64)),
        ("patching.patch_size_zyx", "auto", "auto"),
        ("patching.foreground.block_zyx", "[32 128 128]", (32, 128, 128)),
        ("patching.augmentation.intensity_scale", "0.8x1.2", (0.8, 1.2)),
        ("patching.position.channels", "surface_distance depth_z", ("surface_distance", "depth_z")),
        ("training.model.spacing_zyx", "2x0.39x0.39", (2.0, 0.39, 0.39)),
    ],
)
def test_list_parameters_take_one_command_line_word(key, word, expected):
    """Kedro's --params splits at commas: every list a user sets per run also takes 64x256x256 or "a b c"."""
    *groups, name = key.split(".")
    params: dict = {name: word}
    for group in reversed(groups):
        params = {group: params}
    value = validate_parameters(with_command_line_lists(params))
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected


def test_a_word_that_is_not_a_list_is_still_refused_naming_the_parameter():
    with pytest.raises(ParameterError, match=r"inference\.tile_zyx\[2\] = \[64, 256\]"):  # two sizes of three
        validate_parameters(with_command_line_lists({"inference": {"tile_zyx": "64x256"}}))
    with pytest.raises(ParameterError, match=r"inference\.tile_zyx = 'big'"):
        validate_parameters(with_command_line_lists({"inference": {"tile_zyx": "big"}}))


def _kedro_params(value: str) -> dict:
    """``--params VALUE`` as Kedro 1.7's ``kedro run`` parses it (its own option callback)."""
    import click
    from kedro.framework.cli.project import run

    (option,) = [p for p in run.params if p.name == "params"]
    return option.process_value(click.Context(run), value)


def test_the_documented_list_syntax_is_what_kedros_params_parser_accepts():
    """docs/reference/configuration.md: its ``--params`` example goes through Kedro's parser to a list."""
    import click

    page = (Path(__file__).parents[1] / "docs" / "reference" / "configuration.md").read_text()
    (example,) = re.findall(r"^kedro run .*--params (\S*tile_zyx=\S+)$", page, flags=re.MULTILINE)
    params = validate_parameters(with_command_line_lists(_kedro_params(example)))
    assert params.inference.tile_zyx == (16, 64, 64)
    quoted = with_command_line_lists(_kedro_params("inference.tile_zyx=16 64 64"))  # one quoted shell word
    assert validate_parameters(quoted).inference.tile_zyx == (16, 64, 64)
    with pytest.raises(click.UsageError, match="must contain a key and a value"):  # why the doc says not [16,64,64]
        _kedro_params("inference.tile_zyx=[16,64,64]")
    assert "Item `64` must contain a key and a value separated by `=`" in " ".join(page.split())
