"""The evaluation nodes' refusals: a split without test volumes is the user's to fix, named as a setting."""

import pandas as pd
import pytest

from fusemycell.errors import UserError
from fusemycell.pipelines.evaluation.nodes import score_test_volumes


def test_a_split_without_test_volumes_names_the_setting_to_change():
    split = pd.DataFrame({"pair": ["image_1_nucleus"], "split": ["train"]})
    with pytest.raises(UserError, match="no test volume to evaluate") as raised:
        score_test_volumes({}, split, {}, None)
    assert str(raised.value).startswith("no test volume to evaluate: check preprocessing.split.test_fraction")
    assert [s.name for s in raised.value.settings] == ["preprocessing.split.test_fraction"]
