"""simulation -> preprocessing -> patching through a real Kedro session in the test environment."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from fusemycell.io.formats import read_volume
from fusemycell.patching.store import PatchStore
from tests.challenge_reference import percentile_normalize
from tests.conftest import project_after, run_session

pytestmark = pytest.mark.slow  # whole pipeline chains, Kedro sessions or real processes


@pytest.fixture(scope="module")
def processed_project(tmp_path_factory):
    return project_after(tmp_path_factory, "chain", ["simulation", "preprocessing", "patching"])


def test_reports_are_written(processed_project):
    reporting = processed_project / "data" / "08_reporting"
    fingerprint = json.loads((reporting / "fingerprint" / "fingerprint.json").read_text())
    assert len(fingerprint["volumes"]) == 8
    assert {"profile_z", "profile_x", "percentiles", "foreground_fraction"} <= set(fingerprint["volumes"][0])
    table = pd.read_csv(reporting / "fingerprint" / "fingerprint.csv")
    assert {"p2", "p99_8", "p99_9", "p0_1", "p50", "foreground_fraction", "spacing_z_um"} <= set(table.columns)
    summary = pd.read_csv(reporting / "fingerprint" / "summary.csv")
    assert set(summary["study"]) == {"a", "c"}
    assert sorted(p.name for p in (reporting / "fingerprint" / "figures").iterdir()) == [
        "image_0_nucleus.png",
        "image_1_membrane.png",
        "image_2_nucleus.png",
        "image_3_membrane.png",
    ]
    report = json.loads((reporting / "validation_report.json").read_text())
    assert report["errors"] == 0 and len(report["valid_pairs"]) == 4


def test_normalized_volumes_follow_the_challenge_formula(processed_project):
    intermediate = processed_project / "data" / "02_intermediate"
    records = pd.read_csv(intermediate / "preprocessing.csv")
    assert len(records) == 8
    # a volume already on the resampling target (resample.enabled: auto), so its grid is the acquisition's
    as_acquired = records[(records.kind == "fused") & (records.output_size_z == records.crop_z1 - records.crop_z0)]
    assert len(as_acquired) >= 1
    row = as_acquired.iloc[0]
    raw = read_volume(row["source"]).data
    normalized = read_volume(intermediate / "volumes" / f"{row['pair']}_fused.tif")
    box = tuple(slice(int(row[f"crop_{a}0"]), int(row[f"crop_{a}1"])) for a in "zyx")
    np.testing.assert_allclose(normalized.data, percentile_normalize(raw.astype(np.float64))[box], rtol=1e-5, atol=1e-6)
    assert normalized.metadata["norm_low"] == pytest.approx(np.percentile(raw, 2))


def test_split_is_by_volume_and_test_volumes_are_never_patched(processed_project):
    split = pd.read_csv(processed_project / "data" / "02_intermediate" / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    test_pairs = set(split.loc[split.split == "test", "pair"])
    for name in ("train", "val"):
        store = PatchStore(processed_project / "data" / "05_model_input" / "patches" / name)
        assert len(store) > 0
        assert store.patch_size_zyx == (8, 16, 16)
        assert not set(store.index["pair"]) & test_pairs
        assert set(store.index["pair"]) == set(split.loc[split.split == name, "pair"])
        assert (store.index["split"] == name).all()
        angle, fused = store[0]
        assert angle.shape == (8, 16, 16) and np.isfinite(angle).all() and np.isfinite(fused).all()


def test_patches_focus_on_the_signal(processed_project):
    store = PatchStore(processed_project / "data" / "05_model_input" / "patches" / "train")
    share = store.index["contains_foreground"].mean()
    assert share >= 1 - 0.25  # background_fraction of the base parameters


def test_fail_policy_stops_but_saves_the_report_and_skip_processes_the_good_pairs(kedro_project):
    run_session(kedro_project, ["simulation"])
    raw = kedro_project / "data" / "01_raw" / "synthetic"
    # a user's own folder (no simulator marker), with one broken file
    mine = kedro_project / "data" / "01_raw" / "mine"
    shutil.copytree(raw, mine, ignore=shutil.ignore_patterns(".fusemycell-generated"))
    (mine / "image_2_nucleus_fused.tif").write_bytes(b"broken on purpose")

    with pytest.raises(ValueError, match=r"image_2_nucleus: unreadable"):
        run_session(kedro_project, ["preprocessing"], raw_dir=str(mine))
    # own data: its artefacts in folders of its own (fusemycell.workspace)
    report = json.loads((kedro_project / "data" / "08_reporting" / "mine" / "validation_report.json").read_text())
    assert report["invalid_pairs"] == ["image_2_nucleus"]  # saved although the run stopped

    (kedro_project / "conf" / "test" / "parameters_skip.yml").write_text("preprocessing:\n  on_invalid: skip\n")
    run_session(kedro_project, ["preprocessing"], raw_dir=str(mine))
    volumes = sorted(p.name for p in (kedro_project / "data" / "02_intermediate" / "mine" / "volumes").glob("*.tif"))
    assert "image_2_nucleus_angle.tif" not in volumes
    assert len(volumes) == 6


def test_resample_auto_takes_its_target_from_the_volumes_that_are_not_test(kedro_project):
    from fusemycell.preprocessing.resample import target_spacing

    run_session(kedro_project, ["simulation"])
    run_session(kedro_project, ["preprocessing"], preprocessing={"resample": {"enabled": "auto"}})
    intermediate = kedro_project / "data" / "02_intermediate"
    split = pd.read_csv(intermediate / "split.csv")
    fingerprint = pd.read_csv(kedro_project / "data" / "08_reporting" / "fingerprint" / "fingerprint.csv")
    learnt = set(split.loc[split.split != "test", "pair"])
    angles = fingerprint[(fingerprint.kind == "angle") & fingerprint.pair.isin(learnt)]
    expected = target_spacing(angles[["spacing_z_um", "spacing_y_um", "spacing_x_um"]].to_numpy())
    records = pd.read_csv(intermediate / "preprocessing.csv")
    for axis, value in zip("zyx", expected):
        assert np.allclose(records[f"resample_target_{axis}_um"], value)
    assert expected[0] < fingerprint["spacing_z_um"].max()  # the thick planes are interpolated, not the target
    thick = records[records.spacing_z_um == records.spacing_z_um.max()].iloc[0]
    written = read_volume(intermediate / "volumes" / f"{thick['pair']}_{thick['kind']}.tif")
    assert written.data.shape[0] > int(thick["crop_z1"]) - int(thick["crop_z0"])  # more planes than were cropped
