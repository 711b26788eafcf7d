from collections import Counter

import pytest

from fusemycell.errors import UserError
from fusemycell.preprocessing.split import split_by_volume


def _volumes(n_per_stratum=4, studies=("a", "b", "c")):
    return [
        {"pair": f"image_{len(studies) * 10 * c + 10 * s + i}_{channel}", "channel": channel, "study": study}
        for c, channel in enumerate(("nucleus", "membrane"))
        for s, study in enumerate(studies)
        for i in range(n_per_stratum)
    ]


def test_split_is_disjoint_complete_and_deterministic():
    volumes = _volumes()
    first = split_by_volume(volumes, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert set(first) == {v["pair"] for v in volumes}  # every volume, exactly once (a dict key)
    assert split_by_volume(list(reversed(volumes)), val_fraction=0.2, test_fraction=0.2, seed=3) == first
    assert split_by_volume(volumes, val_fraction=0.2, test_fraction=0.2, seed=4) != first


def test_split_is_stratified_by_channel_and_study():
    volumes = _volumes(n_per_stratum=5)
    assignment = split_by_volume(volumes, val_fraction=0.2, test_fraction=0.2, seed=0)
    counts = Counter(assignment.values())
    assert counts == {"train": 18, "val": 6, "test": 6}
    for split in ("val", "test"):
        members = [v for v in volumes if assignment[v["pair"]] == split]
        # every (study, channel) stratum contributes exactly once to a 6-volume split of 6 strata
        assert Counter((v["study"], v["channel"]) for v in members) == Counter(
            {(s, c): 1 for s in "abc" for c in ("nucleus", "membrane")}
        )


def test_small_datasets_still_get_validation_and_test_volumes():
    volumes = _volumes(n_per_stratum=1, studies=("a", "c"))
    counts = Counter(split_by_volume(volumes, val_fraction=0.1, test_fraction=0.1, seed=0).values())
    assert counts == {"train": 2, "val": 1, "test": 1}


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_datasets_keep_everything_for_training(n):
    volumes = _volumes(n_per_stratum=1, studies=("a",))[:n]
    assert set(split_by_volume(volumes, val_fraction=0.2, test_fraction=0.2, seed=0).values()) == {"train"}


def test_every_study_with_three_volumes_gets_a_validation_volume():
    """Interleaving strata alone gave the first studies every validation volume; each study now has one."""
    volumes = [
        {"pair": f"image_{study}{i}_{channel}", "channel": channel, "study": study}
        for study in "abc"
        for channel in ("nucleus", "membrane")
        for i in range(3)
    ] + [
        {"pair": "image_d0_nucleus", "channel": "nucleus", "study": "d"},
        {"pair": "image_d1_nucleus", "channel": "nucleus", "study": "d"},
    ]
    for seed in range(5):
        split = split_by_volume(volumes, val_fraction=0.1, test_fraction=0.3, seed=seed)
        for study in "abc":
            members = [v["pair"] for v in volumes if v["study"] == study]
            assert any(split[p] == "val" for p in members), (seed, study)
            assert any(split[p] == "train" for p in members), (seed, study)  # never its last training volume
        assert sorted(split.values()).count("val") >= 3


def test_test_studies_hold_out_every_volume_of_a_study_and_split_the_rest():
    volumes = _volumes(n_per_stratum=3)
    assignment = split_by_volume(volumes, val_fraction=0.17, test_fraction=0.0, seed=5, test_studies=["c"])
    held_out = {v["pair"] for v in volumes if v["study"] == "c"}
    assert {p for p, s in assignment.items() if s == "test"} == held_out
    rest = [v for v in volumes if v["study"] != "c"]
    # the other studies split exactly as they would alone: every one keeps training and validation volumes
    assert {p: s for p, s in assignment.items() if p not in held_out} == split_by_volume(
        rest, val_fraction=0.17, test_fraction=0.0, seed=5
    )
    for study in "ab":
        assert {assignment[v["pair"]] for v in rest if v["study"] == study} == {"train", "val"}


def test_test_fraction_still_applies_to_the_other_studies():
    volumes = _volumes(n_per_stratum=3)
    counts = Counter(
        split_by_volume(volumes, val_fraction=0.2, test_fraction=0.25, seed=0, test_studies=["a"]).values()
    )
    assert counts["test"] == 6 + 3  # study a whole, and a quarter of the 12 others


@pytest.mark.parametrize(
    ("studies", "words"),
    [(["d"], "'d', but the volumes' studies are 'a', 'b', 'c'"), (["a", "b", "c"], "holds out every study")],
)
def test_test_studies_that_name_no_study_or_leave_none_to_train_are_refused(studies, words):
    with pytest.raises(UserError, match="preprocessing.split.test_studies") as error:
        split_by_volume(_volumes(), val_fraction=0.2, test_fraction=0.0, seed=0, test_studies=studies)
    assert words in str(error.value)
    assert [s.name for s in error.value.settings] == ["preprocessing.split.test_studies"]


def test_pairs_needed_follows_the_split_rule():
    from fusemycell.preprocessing.split import pairs_needed

    assert pairs_needed(val_fraction=0.17, test_fraction=0.34) == 3
    for total in range(1, 3):  # below that, the split leaves validation or test empty
        volumes = _volumes(n_per_stratum=1, studies=("a",))[:total]
        assert "val" not in split_by_volume(volumes, val_fraction=0.17, test_fraction=0.34, seed=0).values()


def test_too_few_pairs_are_refused_naming_the_folder_the_counts_and_the_minimum():
    from fusemycell.preprocessing.split import TooFewPairsError, check_enough_pairs

    with pytest.raises(TooFewPairsError) as error:
        check_enough_pairs(["nucleus", "membrane"], "data/01_raw/mine", val_fraction=0.17, test_fraction=0.34)
    message = str(error.value)
    assert "data/01_raw/mine holds 2 complete angle/fused pairs (nucleus 1, membrane 1)" in message
    assert "at least 3" in message and "(preprocessing.split.test_fraction: 0 leaves the test out)" in message
    assert isinstance(error.value, UserError)
    check_enough_pairs(["nucleus"] * 3, "data/01_raw/mine", val_fraction=0.17, test_fraction=0.34)  # enough
