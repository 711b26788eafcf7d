"""The training pipeline records the training domain of the split's training and validation volumes on the card."""

import numpy as np
import pandas as pd

from fusemycell.io.tiff import write_volume
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.unet import UNet3D
from fusemycell.pipelines.training.nodes import describe_training_domain, with_training_domain


def _fingerprint(tmp_path):
    volumes = []
    for index, spacing in enumerate(((1.0, 0.4, 0.4), (2.0, 0.4, 0.4), (3.0, 0.3, 0.3))):  # train, val, test
        pair = f"image_{index}_nucleus"
        path = tmp_path / f"{pair}_angle.tif"
        write_volume(path, np.random.default_rng(index).integers(0, 900, (6, 16, 16), np.uint16), spacing)
        volumes.append(
            {
                "name": f"{pair}_angle",
                "pair": pair,
                "kind": "angle",
                "path": str(path),
                "error": None,
                "spacing_zyx": list(spacing),
                "shape": [6, 16, 16],
                "percentiles": {"2": 10.0 * (index + 1), "99_8": 800.0},
                "noise_sigma": 40.0 * (index + 1),  # measured by the fingerprint's pass
            }
        )
    split = pd.DataFrame({"pair": [v["pair"] for v in volumes], "split": ["train", "val", "test"]})
    return {"volumes": volumes, "summary": []}, split


def test_the_domain_spans_train_and_validation_not_test(tmp_path):
    fingerprint, split = _fingerprint(tmp_path)
    domain = describe_training_domain(fingerprint, split)
    assert domain["volumes"] == 2
    assert domain["spacing_zyx_um"][0] == {"low": 1.0, "high": 2.0}  # the test pair's 3 um is not in it
    assert domain["percentiles"]["2"] == {"low": 10.0, "high": 20.0}
    assert domain["noise"] == {"low": 40.0 / 790.0, "high": 80.0 / 780.0}  # relative to p99.8 - p2, test left out
    config = UNetConfig(depth=2, base_channels=4)
    model = TrainedModel(UNet3D(config), card_for(config, (8, 16, 16)))
    recorded = with_training_domain(model, domain)
    assert recorded.card.training_domain.spacing_zyx_um[0].high == 2.0
    assert recorded.network is model.network
    assert with_training_domain(model, {}) is model
    assert describe_training_domain({"volumes": []}, split) == {}
