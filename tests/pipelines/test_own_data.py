"""A new user's own data through Kedro: its artefacts go to folders of its own, a too-small folder writes nothing."""

import shutil

import pytest

from tests.conftest import run_session

pytestmark = pytest.mark.slow  # Kedro sessions on a project copy


def _files(folder):
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _own_folder(project, name, pairs):
    """Some of the simulated pairs copied as a user's own folder (no simulator marker)."""
    raw = project / "data" / "01_raw"
    mine = raw / name
    mine.mkdir()
    for path in sorted((raw / "synthetic").glob("image_*.tif")):
        if int(path.name.split("_")[1]) in pairs:
            shutil.copy(path, mine / path.name)
    return f"data/01_raw/{name}"


def test_own_data_never_replaces_the_demo_artefacts(kedro_project):
    run_session(kedro_project, ["simulation", "preprocessing"])
    demo = {layer: _files(kedro_project / "data" / layer) for layer in ("02_intermediate", "08_reporting")}
    raw_dir = _own_folder(kedro_project, "mine", pairs={0, 1, 2, 3})
    run_session(kedro_project, ["preprocessing"], raw_dir=raw_dir)
    for layer, files in demo.items():
        after = _files(kedro_project / "data" / layer)
        assert {k: v for k, v in after.items() if k.parts[0] != "mine"} == files  # untouched, not even rewritten
    mine = kedro_project / "data" / "02_intermediate" / "mine"
    assert (mine / "split.csv").is_file() and (mine / "volumes" / "image_0_nucleus_angle.tif").is_file()
    assert (kedro_project / "data" / "08_reporting" / "mine" / "fingerprint" / "fingerprint.json").is_file()


def test_a_folder_too_small_to_split_fails_before_any_file_is_written(kedro_project):
    run_session(kedro_project, ["simulation"])
    raw_dir = _own_folder(kedro_project, "two", pairs={0, 1})
    before = _files(kedro_project / "data")
    with pytest.raises(ValueError, match=r"data/01_raw/two holds 2 complete angle/fused pairs .* at least 3"):
        run_session(kedro_project, ["preprocessing", "patching"], raw_dir=raw_dir)
    assert _files(kedro_project / "data") == before
