"""Both notebooks run headlessly against the outputs of a test-environment run, and are committed clean."""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import run_kedro

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_both_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["01_explore_data.ipynb", "02_model_results.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    sources = "\n".join(cell.source for cell in code)
    assert "%load_ext kedro.ipython" in sources and "%reload_kedro" in sources  # the catalog, as Kedro loads it


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
@pytest.mark.slow
def test_notebook_runs_headlessly_on_test_outputs(path, evaluated_project, monkeypatch):
    monkeypatch.setenv("FUSEMYCELL_PROJECT", str(evaluated_project))
    monkeypatch.setenv("FUSEMYCELL_ENV", "test")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # the kernel is started as `python -m ipykernel_launcher`: this interpreter's
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    # as a user has it: conf/base's relative sqlite:///mlflow.db (the copy's absolute override set aside),
    # with the kernel started in notebooks/, as `kedro jupyter lab` does
    override = evaluated_project / "conf" / "test" / "mlflow.yml"
    aside = override.with_name("mlflow.yml.aside")
    override.rename(aside)
    try:
        client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    finally:
        aside.rename(override)
    assert not (path.parent / "mlflow.db").exists()  # no stray store next to the notebooks

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    figures = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    tables = [o for cell in code for o in cell.outputs if "text/html" in o.get("data", {})]
    listing = [(i, [(o.output_type, sorted(o.get("data", {}))) for o in cell.outputs]) for i, cell in enumerate(code)]
    assert len(figures) >= (3 if path.stem.startswith("01") else 2) and len(tables) >= 2, listing
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for cell in code for o in cell.outputs)
    assert "environment test" in text
    if path.stem.startswith("02"):
        assert "gaussian_blur" in text and "identity" in text  # the metric table lists the baselines
        assert "tracking URI: sqlite:///" in text and "val_nssim" in text
        assert "no MLflow run" not in text and "run '" in text  # the curves came from MLflow, not the CSV
        # the slices are on the per-volume scale the metric and the pipeline's figure use
        from fusemycell.io.formats import read_volume
        from fusemycell.metrics.ssim import image_statistics

        first = sorted((evaluated_project / "data" / "07_model_output" / "test_predictions").glob("*.tif"))[0]
        stats = image_statistics(read_volume(first, lazy=True).data)
        assert f"prediction: p2 {stats.low:.1f}, p99.8 {stats.high:.1f}" in text
    stderr = "".join(o.get("text", "") for cell in code for o in cell.outputs if o.get("name") == "stderr")
    assert "IProgress" not in stderr and "Downloading artifacts" not in stderr  # no widget-less progress bars


@pytest.mark.slow
def test_kedro_jupyter_setup_installs_a_kernel_that_loads_kedro(tmp_path, kedro_project):
    """`kedro jupyter lab` starts with this kernel; it is installed where JUPYTER_DATA_DIR says."""
    setup = run_kedro(kedro_project, "jupyter", "setup", JUPYTER_DATA_DIR=str(tmp_path / "jupyter"))
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-2000:]
    (kernel,) = (tmp_path / "jupyter" / "kernels").glob("kedro_fusemycell*/kernel.json")
    spec = kernel.read_text()
    assert "ipykernel" in spec and "kedro.ipython" in spec
