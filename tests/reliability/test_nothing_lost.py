"""Nothing lost, nothing silently wrong: inputs never overwritten, one source for every path, one writer
per folder, evaluation of the very files the split was made from, reports that say what happened.

Each test reproduces a way main lost data or returned a wrong result with exit status 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kedro.io.core import DatasetError

from fusemycell.datasets.tiff_folder_dataset import PROVENANCE_VALUE, TiffFolderDataset
from fusemycell.errors import UserError
from fusemycell.hooks import MissingInputError
from fusemycell.inference.folders import UnsafeOutputError
from fusemycell.inference.run import InferenceRun
from fusemycell.io import folder_lock
from fusemycell.io.atomic import temporary_sibling
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import save_volume
from fusemycell.io.volume import Volume
from fusemycell.parameters import ParameterError
from fusemycell.preprocessing.split import SplitMismatchError
from tests.conftest import inference_report, run_kedro, run_session

INFERENCE = {"device": "cpu", "amp": False}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tif"))}


def _volume(seed: int = 0) -> Volume:
    data = np.random.default_rng(seed).integers(100, 400, (6, 16, 16)).astype(np.uint16)
    return Volume(data, (1.0, 0.5, 0.5), {"channel": "nucleus", "study": "s"})


def _raw(project: Path) -> Path:
    return project / "data" / "01_raw" / "synthetic"


def _angles(project: Path, folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names or ("image_0_nucleus_angle.tif",):
        shutil.copy(_raw(project) / name, folder / name)
    return folder


# ---------------------------------------------------------------- 1. inference never overwrites inputs
@pytest.mark.parametrize(
    "output",
    ["data/01_raw/synthetic", "data/01_raw/synthetic/", "data/01_raw/./synthetic", "link_to_raw", "link_to_raw/pred"],
    ids=["relative", "trailing slash", "dot", "symlink", "inside"],
)
@pytest.mark.slow
def test_inference_refuses_the_raw_folder_however_it_is_named(evaluated_project, output):
    link = evaluated_project / "link_to_raw"
    if not link.exists():
        link.symlink_to(_raw(evaluated_project), target_is_directory=True)
    before = _digests(_raw(evaluated_project))
    with pytest.raises(UnsafeOutputError, match="is (the|inside the) (input|raw) folder"):
        run_session(evaluated_project, ["inference"], inference={**INFERENCE, "output_dir": output})
    assert _digests(_raw(evaluated_project)) == before and not (_raw(evaluated_project) / "pred").exists()
    report = inference_report(evaluated_project, (evaluated_project / output).resolve())
    assert report["status"] == "refused"  # the report says so, not an older run's result
    assert "is the" in report["reason"] or "is inside the" in report["reason"]


@pytest.mark.slow
def test_inference_refuses_the_input_folder_chosen_through_raw_dir(evaluated_project):
    mine = _angles(evaluated_project, evaluated_project / "mine_raw_dir")
    before = _digests(mine)
    with pytest.raises(UnsafeOutputError, match="is the input folder"):
        run_session(
            evaluated_project, ["inference"], raw_dir=str(mine), inference={**INFERENCE, "output_dir": str(mine)}
        )
    assert _digests(mine) == before


@pytest.mark.slow
def test_inference_refuses_a_folder_holding_raw_pairs(evaluated_project):
    inputs = _angles(evaluated_project, evaluated_project / "in_pairs_check")
    pairs = evaluated_project / "other_pairs"
    pairs.mkdir()
    for name in ("image_1_membrane_angle.tif", "image_1_membrane_fused.tif"):
        shutil.copy(_raw(evaluated_project) / name, pairs / name)
    before = _digests(pairs)
    with pytest.raises(UnsafeOutputError, match="holds raw angle/fused pairs"):
        run_session(
            evaluated_project,
            ["inference"],
            inference={**INFERENCE, "input_dir": str(inputs), "output_dir": str(pairs)},
        )
    assert _digests(pairs) == before


def test_a_file_fusemycell_did_not_write_is_never_replaced_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    save_volume(out / "a.tif", _volume(1))  # someone's file, no provenance mark
    before = (out / "a.tif").read_bytes()
    with pytest.raises(DatasetError, match=r"refusing to replace 1 file.*a\.tif.*inference\.overwrite: true"):
        TiffFolderDataset(path=out).save({"b.tif": _volume(2), "a.tif": _volume(3)})
    assert (out / "a.tif").read_bytes() == before and not (out / "b.tif").exists()  # nothing written at all
    TiffFolderDataset(path=out, overwrite=True).save({"a.tif": _volume(3)})
    replaced = read_volume(out / "a.tif")
    assert np.array_equal(replaced.data, _volume(3).data) and replaced.metadata["fusemycell"] == PROVENANCE_VALUE
    TiffFolderDataset(path=out).save({"a.tif": _volume(4)})  # now ours: replaced without the option
    assert np.array_equal(read_volume(out / "a.tif").data, _volume(4).data)


# ---------------------------------------------------------------- 2. one source of truth for every path
@pytest.mark.slow
def test_raw_dir_reaches_the_catalog_and_the_nodes(evaluated_project):
    mine = _angles(evaluated_project, evaluated_project / "mine_only_raw_dir", "image_3_membrane_angle.tif")
    out = evaluated_project / "out_raw_dir"
    # raw_dir names another dataset: its own model by default (fusemycell.workspace), none trained yet
    with pytest.raises(MissingInputError, match=r"inference_model .*06_models/mine_only_raw_dir-\w+/fusemycell_unet"):
        run_session(
            evaluated_project, ["inference"], raw_dir=str(mine), inference={**INFERENCE, "output_dir": str(out)}
        )
    demo_model = {"model_uri": "data/06_models/fusemycell_unet.pt"}
    run_session(
        evaluated_project,
        ["inference"],
        raw_dir=str(mine),
        inference={**INFERENCE, "output_dir": str(out), **demo_model},
    )
    assert sorted(p.name for p in out.glob("*.tif")) == ["image_3_membrane_angle.tif"]  # not the synthetic folder
    report = inference_report(evaluated_project, out)
    assert report["input"] == str(mine.resolve()) and report["model"].endswith("fusemycell_unet.pt")


@pytest.mark.slow
def test_paths_set_in_an_environment_file_reach_the_datasets(evaluated_project):
    env = evaluated_project / "conf" / "mypaths"
    env.mkdir()
    inputs = _angles(evaluated_project, evaluated_project / "env_in", "image_2_nucleus_angle.tif")
    out = evaluated_project / "env_out"
    (env / "parameters.yml").write_text(
        f"inference:\n  input_dir: {inputs}\n  output_dir: {out}\n  device: cpu\n  amp: false\n"
    )
    (env / "mlflow.yml").write_text((evaluated_project / "conf" / "test" / "mlflow.yml").read_text())
    try:
        run_session(evaluated_project, ["inference"], env="mypaths")
    finally:
        shutil.rmtree(env)
    assert sorted(p.name for p in out.glob("*.tif")) == ["image_2_nucleus_angle.tif"]
    assert not (evaluated_project / "data" / "07_model_output" / "inference" / "image_2_nucleus_angle.tif").exists()


@pytest.mark.slow
def test_a_second_source_of_a_path_in_the_catalog_is_refused(evaluated_project):
    env = evaluated_project / "conf" / "catalogpath"
    env.mkdir()
    (env / "catalog.yml").write_text(
        "raw_pairs:\n  type: fusemycell.datasets.FuseMyCellPairsDataset\n  path: data/01_raw/elsewhere\n"
    )
    try:
        with pytest.raises(
            ParameterError,
            match=r"'raw_pairs' sets its location to .*elsewhere.*set raw_dir: .*in conf/catalogpath/parameters.yml",
        ):
            run_session(evaluated_project, ["inference"], env="catalogpath")
    finally:
        shutil.rmtree(env)


@pytest.mark.slow
def test_a_path_edited_in_the_base_catalog_is_refused_too(evaluated_project):
    catalog = evaluated_project / "conf" / "base" / "catalog.yml"
    original = catalog.read_text()
    catalog.write_text(original.replace("  path: data/01_raw/synthetic\n", "  path: data/01_raw/fusemycell\n", 1))
    try:
        with pytest.raises(ParameterError, match="'raw_pairs' sets its location to .*fusemycell.*set raw_dir"):
            run_session(evaluated_project, ["inference"])
    finally:
        catalog.write_text(original)


# ---------------------------------------------------------------- 3. one writer per folder
_HOLD = """
import sys, time
from fusemycell.io import folder_lock
folder_lock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_writer_fails_at_once_naming_the_first_and_leaves_its_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    live_temporary = temporary_sibling(out / "image_0_nucleus_angle.tif")  # the other run's file in progress
    live_temporary.write_bytes(b"half written")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DatasetError, match=rf"{out} is in use by another fusemycell run \(process {holder.pid} "):
            TiffFolderDataset(path=out).save({"image_1_nucleus_angle.tif": _volume()})
        assert holder.poll() is None  # refused while the holder still runs: it did not wait for the other run
        assert live_temporary.read_bytes() == b"half written"  # leftover cleaning did not touch it
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", _HOLD.replace("time.sleep(60)", ""), str(out)], check=True)
    assert dead.returncode == 0 and folder_lock.read_owner(out) is not None  # exited without releasing
    TiffFolderDataset(path=out).save({"a.tif": _volume()})
    assert (out / "a.tif").exists() and folder_lock.read_owner(out) is None
    assert "no longer exists" in caplog.text


@pytest.mark.slow
def test_two_concurrent_inference_runs_on_one_folder(evaluated_project):
    out = evaluated_project / "shared_out"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        inputs = _angles(evaluated_project, evaluated_project / "in_concurrent")
        busy = f"in use by another fusemycell run .process {holder.pid}"
        with pytest.raises(folder_lock.FolderBusyError, match=busy):
            run_session(
                evaluated_project,
                ["inference"],
                inference={**INFERENCE, "input_dir": str(inputs), "output_dir": str(out)},
            )
        assert not list(out.glob("*.tif"))
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- 4. evaluation scores the split's own files
@pytest.mark.slow
def test_evaluation_of_other_files_with_the_same_names_fails_naming_the_folder(evaluated_project):
    impostor = evaluated_project / "same_names_other_voxels"
    shutil.copytree(_raw(evaluated_project), impostor)
    for path in impostor.glob("*.tif"):  # same names, other acquisitions
        volume = read_volume(path)
        save_volume(path, Volume(volume.data[::-1].copy(), volume.spacing_zyx, volume.metadata))
    reports = evaluated_project / "data" / "08_reporting" / "evaluation"
    before = (reports / "per_volume.csv").read_bytes()
    # another folder is another dataset: its artefacts are its own, so there is no split of it to score with
    with pytest.raises(MissingInputError, match=r"volume_split .*same_names_other_voxels-\w+/split.csv.*raw_dir="):
        run_session(evaluated_project, ["evaluation"], raw_dir=str(impostor))
    # the same folder with other files in it since the split: named, never scored
    raw = _raw(evaluated_project)
    kept = {path: path.read_bytes() for path in raw.glob("*.tif")}
    try:
        for path in kept:
            shutil.copy(impostor / path.name, path)
        with pytest.raises(SplitMismatchError, match=f"made from {raw}.*hold other voxels.*raw_dir"):
            run_session(evaluated_project, ["evaluation"])
    finally:
        for path, content in kept.items():
            path.write_bytes(content)
    assert (reports / "per_volume.csv").read_bytes() == before


@pytest.mark.slow
def test_the_evaluation_report_names_the_raw_folder(evaluated_project):
    report = json.loads((evaluated_project / "data" / "08_reporting" / "evaluation" / "report.json").read_text())
    assert report["raw_folders"] == [str(_raw(evaluated_project))]


# ---------------------------------------------------------------- 5. every run writes its report
@pytest.mark.slow
def test_a_failed_run_replaces_the_previous_report(evaluated_project):
    inputs = _angles(evaluated_project, evaluated_project / "in_report")
    out = evaluated_project / "out_report"
    params = {**INFERENCE, "input_dir": str(inputs), "output_dir": str(out)}
    run_session(evaluated_project, ["inference"], inference=params)
    assert inference_report(evaluated_project, out)["failures"] == []
    (inputs / "broken.tif").write_text("not a tiff")
    with pytest.raises(DatasetError, match="broken.tif"):
        run_session(evaluated_project, ["inference"], inference=params)
    report = inference_report(evaluated_project, out)
    assert report["status"] == "failed" and [f["file"] for f in report["failures"]] == ["broken.tif"]
    assert report["written"] == ["image_0_nucleus_angle.tif"]
    with pytest.raises(MissingInputError, match="inference_model .*model.pt. not found"):  # before any prediction
        run_session(evaluated_project, ["inference"], inference={**params, "model_uri": "missing/model.pt"})
    report = inference_report(evaluated_project, out)
    assert report["status"] == "failed" and "before any prediction" in report["failures"][0]["problem"]
    assert report["written"] == []


def test_a_run_refused_for_its_parameters_rewrites_its_folders_report_and_no_other(evaluated_project):
    inputs = _angles(evaluated_project, evaluated_project / "in_refused")
    out, other = evaluated_project / "out_refused", evaluated_project / "out_refused_other"
    params = {**INFERENCE, "input_dir": str(inputs)}
    run_session(evaluated_project, ["inference"], inference={**params, "output_dir": str(out)})
    run_session(evaluated_project, ["inference"], inference={**params, "output_dir": str(other)})
    assert inference_report(evaluated_project, out)["status"] == "complete"
    with pytest.raises(ParameterError, match="inference.batch_size"):
        run_session(evaluated_project, ["inference"], inference={**params, "output_dir": str(out), "batch_size": 0})
    report = inference_report(evaluated_project, out)
    assert report["status"] == "refused" and report["written"] == []
    assert "inference.batch_size = 0 (set in --params)" in report["reason"]
    assert report["output_dir"] == str(out.resolve())
    assert inference_report(evaluated_project, other)["status"] == "complete"  # another folder's report is its own
    with pytest.raises(ParameterError):  # a run that writes no prediction leaves every report alone
        run_session(evaluated_project, ["evaluation"], inference={"output_dir": str(other), "batch_size": 0})
    assert inference_report(evaluated_project, other)["status"] == "complete"


def test_an_output_folder_that_cannot_be_written_is_in_its_report(evaluated_project):
    inputs = _angles(evaluated_project, evaluated_project / "in_unwritable")
    blocker = evaluated_project / "a_file_not_a_folder"
    blocker.write_text("a file where the output's parent folder should be")
    out = blocker / "predictions"
    with pytest.raises(UserError, match="cannot write here"):
        run_session(
            evaluated_project, ["inference"], inference={**INFERENCE, "input_dir": str(inputs), "output_dir": str(out)}
        )
    report = inference_report(evaluated_project, out)
    assert report["status"] == "failed" and "cannot write here" in report["reason"] and report["written"] == []


def test_two_runs_into_two_folders_at_the_same_time_keep_their_own_reports(tmp_path):
    """Two runs interleaved (both started, both saving, both ending), each saving through the catalog's dataset."""
    import yaml

    from fusemycell.datasets import VolumeFolderDataset
    from fusemycell.inference.report import report_path
    from tests.conftest import PROJECT_ROOT

    entry = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["inference_outputs"]
    entry.pop("type")
    reports = tmp_path / entry.pop("report_dir")
    first, second = (InferenceRun(tmp_path / name, report_dir=reports).start() for name in ("a", "b"))
    VolumeFolderDataset(**{**entry, "path": tmp_path / "a"}).save({"one.tif": _volume(1)})
    VolumeFolderDataset(**{**entry, "path": tmp_path / "b"}).save({"two.tif": _volume(2), "three.tif": _volume(3)})
    first.finish()
    second.finish()
    by_folder = {name: json.loads(report_path(reports, tmp_path / name).read_text()) for name in ("a", "b")}
    assert by_folder["a"]["written"] == ["one.tif"] and by_folder["a"]["output_dir"] == str(tmp_path / "a")
    assert by_folder["b"]["written"] == ["three.tif", "two.tif"] and by_folder["b"]["output_dir"] == str(tmp_path / "b")
    assert {r["status"] for r in by_folder.values()} == {"complete"}
    assert [f["status"] for f in by_folder["b"]["files"]] == ["written", "written"]


def test_a_report_left_running_by_a_killed_run_is_named_by_the_next_run(tmp_path, caplog):
    from fusemycell.inference.report import report_path

    out, reports = tmp_path / "out", tmp_path / "reports"
    killed = (
        "import os, signal, sys\n"
        "from fusemycell.inference.run import InferenceRun\n"
        "InferenceRun(sys.argv[1], report_dir=sys.argv[2]).start()\n"
        "open(os.path.join(sys.argv[1], 'finished.tif'), 'wb').close()\n"  # complete on disk, not yet recorded
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", killed, str(out), str(reports)], check=False)
    assert child.returncode == -9
    left = json.loads(report_path(reports, out).read_text())
    assert left["status"] == "running" and left["process"]["pid"] != os.getpid() and left["written"] == []
    run = InferenceRun(out, report_dir=reports).start()  # takes over the dead run's lock
    assert "was killed before it finished" in caplog.text and str(out) in caplog.text
    TiffFolderDataset(path=out).save({"a.tif": _volume()})
    run.finish()
    report = json.loads(report_path(reports, out).read_text())
    assert report["status"] == "complete" and report["written"] == ["a.tif"]
    assert report["previous_run"]["status"] == "interrupted"
    assert report["previous_run"]["process"]["pid"] == left["process"]["pid"]
    assert report["previous_run"]["written"] == ["finished.tif"]  # what it really wrote, found on disk


# ---------------------------------------------------------------- 13. misspelt parameters
@pytest.mark.slow
def test_misspelt_parameters_stop_the_run_naming_key_source_and_closest_name(evaluated_project):
    result = run_kedro(
        evaluated_project,
        "run",
        "--pipelines",
        "inference",
        "--env",
        "test",
        "--params",
        "inference.overlapp=0.25,raw_dirr=X",
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "inference.overlapp (set in --params): unknown parameter; did you mean 'inference.overlap'?" in output
    assert "raw_dirr (set in --params): unknown parameter; did you mean 'raw_dir'?" in output
    assert "predicting" not in output  # before any node


@pytest.mark.slow
def test_a_misspelt_key_in_an_environment_file_names_that_file(evaluated_project):
    env = evaluated_project / "conf" / "typo"
    env.mkdir()
    (env / "parameters.yml").write_text("trainng:\n  epochs: 5\ninference:\n  input_dri: somewhere\n")
    try:
        with pytest.raises(ParameterError) as raised:
            run_session(evaluated_project, ["inference"], env="typo")
    finally:
        shutil.rmtree(env)
    message = str(raised.value)
    assert "trainng (set in conf/typo/parameters.yml): unknown parameter; did you mean 'training'?" in message
    assert "inference.input_dri (set in conf/typo/parameters.yml): unknown parameter; did you mean" in message


# ---------------------------------------------------------------- 16. small but real
@pytest.mark.slow
def test_fused_targets_are_skipped_in_any_case_and_a_folder_of_only_fused_is_an_error(evaluated_project):
    inputs = evaluated_project / "in_case"
    inputs.mkdir()
    shutil.copy(_raw(evaluated_project) / "image_0_nucleus_fused.tif", inputs / "image_0_nucleus_FUSED.tif")
    with pytest.raises(ValueError, match="holds only fused volumes.*no single view"):
        run_session(
            evaluated_project,
            ["inference"],
            inference={**INFERENCE, "input_dir": str(inputs), "output_dir": str(evaluated_project / "out_case")},
        )
    shutil.copy(_raw(evaluated_project) / "image_0_nucleus_angle.tif", inputs / "image_0_nucleus_angle.tif")
    run_session(
        evaluated_project,
        ["inference"],
        inference={**INFERENCE, "input_dir": str(inputs), "output_dir": str(evaluated_project / "out_case")},
    )
    assert sorted(p.name for p in (evaluated_project / "out_case").glob("*.tif")) == ["image_0_nucleus_angle.tif"]


def test_dangling_links_and_folders_named_tif_are_reported(tmp_path, caplog):
    save_volume(tmp_path / "good.tif", _volume())
    (tmp_path / "folder.tif").mkdir()
    os.symlink(tmp_path / "gone.tif", tmp_path / "dangling.tif")
    assert list(TiffFolderDataset(path=tmp_path).load()) == ["good.tif"]
    assert "folder.tif: a folder, not a TIFF file" in caplog.text
    assert "dangling.tif: a link to a file that does not exist" in caplog.text


def test_one_file_as_the_input(tmp_path):
    save_volume(tmp_path / "one.tif", _volume())
    loaded = TiffFolderDataset(path=tmp_path / "one.tif").load()
    assert {name: source.path for name, source in loaded.items()} == {"one.tif": str(tmp_path / "one.tif")}
    assert np.array_equal(loaded["one.tif"]().data[:], _volume().data)  # the volume, read lazily
    with pytest.raises(DatasetError, match="no such file or folder"):
        TiffFolderDataset(path=tmp_path / "missing").load()


def test_an_output_folder_on_a_read_only_mount_is_a_clear_error(tmp_path, monkeypatch):
    import errno

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(DatasetError, match=r"new_folder: cannot write here \(Read-only file system\)"):
        TiffFolderDataset(path=tmp_path / "new_folder").save({"a.tif": _volume()})
