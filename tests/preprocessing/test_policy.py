"""The preprocessing policy survives the table's CSV round trip through its one definition."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from fusemycell.normalization import CHALLENGE_PERCENTILES
from fusemycell.preprocessing.config import CropParams, NormalizationParams
from fusemycell.preprocessing.policy import POLICY_COLUMNS, policy_columns, policy_from_columns


def _round_trip(columns: dict) -> pd.Series:
    text = pd.DataFrame([columns, columns]).to_csv(index=False)
    return pd.read_csv(io.StringIO(text)).iloc[0]


@pytest.mark.parametrize("target", [None, (1.0, 0.39, 0.39)])
@pytest.mark.parametrize("enabled", [True, False])
def test_written_policy_reads_back_equal(target, enabled):
    normalization = NormalizationParams(low_percentile=1.5, high_percentile=99.5)
    crop = CropParams(enabled=enabled, threshold=0.1, margin_um=3.0)
    columns = policy_columns(normalization, crop, target)
    assert tuple(columns) == POLICY_COLUMNS
    assert policy_from_columns(_round_trip(columns)) == (normalization, crop, target)


def test_crop_flag_read_as_text_is_not_truthy_by_length():
    columns = {**policy_columns(NormalizationParams(), CropParams(enabled=False), None), "crop_enabled": "False"}
    assert policy_from_columns(columns)[1].enabled is False


def test_an_older_table_names_the_missing_columns():
    with pytest.raises(ValueError, match="crop_threshold.*preprocessing"):
        policy_from_columns({"norm_p_low": 2.0, "norm_p_high": 99.8, "crop_enabled": True})


def test_the_default_percentiles_are_the_challenges():
    params = NormalizationParams()
    assert (params.low_percentile, params.high_percentile) == CHALLENGE_PERCENTILES
