"""The patching pipeline on preprocessed volumes, with an in-memory catalog and the real datasets."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from fusemycell.datasets import FuseMyCellPairsDataset, PatchStoreDataset
from fusemycell.datasets.atomic import JSONDataset
from fusemycell.io.pairs import pair_files
from fusemycell.io.tiff import write_volume
from fusemycell.models.card import PreprocessingContract
from fusemycell.patching.config import PatchingConfig
from fusemycell.patching.planning import preprocessing_contract
from fusemycell.patching.torch_dataset import PatchDataset
from fusemycell.pipelines.patching.pipeline import create_pipeline
from fusemycell.preprocessing.config import PreprocessingConfig
from fusemycell.preprocessing.fingerprint import scan_volume
from fusemycell.preprocessing.volumes import plan_volumes

SPACING = (3.0, 0.5, 0.5)
TARGET = [1.5, 0.5, 0.5]
PATCHING = {"patch_size_zyx": [4, 16, 16], "min_patches_per_volume": 3, "max_patches_per_volume": 5}
SPLIT = {"image_0_nucleus": "train", "image_1_nucleus": "train", "image_2_membrane": "val", "image_3_nucleus": "test"}


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    root = tmp_path_factory.mktemp("patching")
    rng = np.random.default_rng(0)
    raw = root / "raw"
    for key in SPLIT:
        fused = np.full((10, 40, 40), 100.0)
        fused[3:8, 10:30, 12:30] += rng.random((5, 20, 18)) * 3000
        write_volume(raw / f"{key}_fused.tif", fused.astype(np.uint16), SPACING)
        write_volume(raw / f"{key}_angle.tif", (0.6 * fused).astype(np.uint16), SPACING)
    listing = pair_files(sorted(str(p) for p in raw.iterdir()))
    config = PreprocessingConfig(resample={"enabled": True, "target_spacing_zyx": TARGET}, crop={"margin_um": 1.0})
    scans = {
        f"{key}_{kind}": scan_volume(
            getattr(pair, kind), pair=key, kind=kind, channel=pair.channel, percentiles=[2, 99.8, 99.9]
        )
        for key, pair in listing.items()
        for kind in ("angle", "fused")
    }
    volumes, records = plan_volumes(listing, scans, list(listing), config)
    FuseMyCellPairsDataset(path=root / "volumes").save(volumes)
    catalog = DataCatalog(
        {
            "normalized_volumes": FuseMyCellPairsDataset(path=root / "volumes"),
            "preprocessing_records": MemoryDataset(pd.DataFrame(records)),
            "volume_split": MemoryDataset(pd.DataFrame({"pair": list(SPLIT), "split": list(SPLIT.values())})),
            "params:patching": MemoryDataset(PatchingConfig.model_validate(PATCHING)),  # typed, as the hook gives it
            "patch_store_train": PatchStoreDataset(path=root / "patches" / "train"),
            "patch_store_val": PatchStoreDataset(path=root / "patches" / "val"),
            "patch_sampling_report": JSONDataset(filepath=str(root / "patch_sampling.json")),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return root, catalog


def test_stores_hold_patches_of_train_and_val_volumes_only(patched):
    root, catalog = patched
    train, val = catalog.load("patch_store_train"), catalog.load("patch_store_val")
    assert set(train.index["pair"]) == {"image_0_nucleus", "image_1_nucleus"}
    assert set(val.index["pair"]) == {"image_2_membrane"}  # the test volume is never patched
    counts = train.index.groupby("pair").size()
    assert ((counts >= 3) & (counts <= 5)).all()
    angle, fused = train[0]
    assert angle.shape == fused.shape == (4, 16, 16)
    report = json.loads((root / "patch_sampling.json").read_text())
    assert report["patches"] == {"train": len(train), "val": len(val)}


def test_the_manifest_carries_the_preprocessing_contract_and_the_augmentation(patched):
    _, catalog = patched
    store = catalog.load("patch_store_train")
    contract = PreprocessingContract.model_validate(store.description["preprocessing"])
    assert contract.resample_spacing_zyx == tuple(TARGET)
    assert contract.crop.enabled and contract.crop.margin_um == 1.0
    assert (contract.normalization.low_percentile, contract.normalization.high_percentile) == (2.0, 99.8)
    assert store.description["augmentation"]["flip_xy"] is True
    # the fingerprint columns the model card summarises: raw voxel size and preprocessed shape
    assert set(store.index["acquisition_spacing_z_um"]) == {3.0}
    assert store.index["spacing_z_um"].to_numpy() == pytest.approx(1.5, rel=0.1)  # the resampled grid
    assert (store.index[["size_z", "size_y", "size_x"]] > 0).all().all()


def test_a_preprocessing_table_without_the_policy_says_to_rerun_preprocessing():
    with pytest.raises(ValueError, match="run 'kedro run --pipelines preprocessing' again"):
        preprocessing_contract(pd.DataFrame({"norm_p_low": [2.0], "norm_p_high": [99.8]}))


def test_each_patch_carries_its_volumes_ssim_data_range(patched):
    """The challenge's data range of a fused volume (max - min after its percentile normalisation)."""
    root, catalog = patched
    store = catalog.load("patch_store_train")
    for pair, rows in store.index.groupby("pair"):
        raw = np.asarray(tifffile.imread(root / "raw" / f"{pair}_fused.tif"), dtype=np.float64)
        low, high = np.percentile(raw, [2, 99.8])
        assert rows["data_range"].to_numpy() == pytest.approx((raw.max() - raw.min()) / (high - low), rel=1e-6)
    sample = PatchDataset(store, data_range=True)[0]
    assert float(sample[2]) == pytest.approx(float(store.index["data_range"].iloc[0]))
