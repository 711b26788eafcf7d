"""The guard never returns a scale that scores below the residual base on the validation volumes."""

from functools import partial

import numpy as np
import pytest

from fusemycell.training.guard import GUARD_SCALES, choose_scale
from fusemycell.training.volumes import ValidationVolume


def _volumes(seed: int = 0, n: int = 2) -> list[ValidationVolume]:
    rng = np.random.default_rng(seed)
    volumes = []
    for i in range(n):
        fused = np.zeros((12, 24, 24), np.float32)
        fused[3:9, 6:18, 6:18] = 1.0
        angle = fused + rng.normal(0, 0.3, fused.shape).astype(np.float32)
        volumes.append(ValidationVolume(f"v{i}", ("nucleus", "membrane")[i % 2], angle, fused))
    return volumes


def _identity(angle: np.ndarray) -> np.ndarray:
    return angle


def test_a_harmful_correction_is_switched_off():
    def worse(volume):  # adds structured noise: worse than the input everywhere
        angle = volume.angle
        return angle + np.sin(np.arange(angle.size, dtype=np.float32)).reshape(angle.shape)

    choice = choose_scale(_volumes(), worse, _identity)
    assert choice.scale == 0.0
    assert choice.score(0.0) == pytest.approx(0.0, abs=1e-9)  # the base is the input: N_SSIM 0
    assert all(choice.score(s) < 0 for s in GUARD_SCALES if s > 0)


def test_a_helpful_correction_is_kept_and_never_below_the_base():
    volumes = _volumes(1)
    targets = {id(v.angle): v.fused for v in volumes}

    def better(volume):  # halfway to the target
        return 0.5 * volume.angle + 0.5 * targets[id(volume.angle)]

    choice = choose_scale(volumes, better, _identity)
    assert choice.scale == 1.0 and choice.score(1.0) > 0.3
    assert choice.score(choice.scale) >= choice.score(0.0)
    assert set(choice.per_volume) == {"v0", "v1"} and set(choice.scores[1.0]) == {"nucleus", "membrane"}


def test_no_volume_is_an_error():
    with pytest.raises(ValueError, match="at least one validation volume"):
        choose_scale([], _identity, _identity)


def test_the_guarded_network_is_the_base_plus_the_scaled_correction(tmp_path):
    import torch

    from fusemycell.inference.predictor import predict_whole_volume
    from fusemycell.inference.tiling import TileSettings
    from fusemycell.models.card import card_for
    from fusemycell.models.checkpoint import TrainedModel, load_model, save_model
    from fusemycell.models.config import UNetConfig
    from fusemycell.models.unet import UNet3D
    from fusemycell.training.guard import guard_model

    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4)
    network = UNet3D(config)
    torch.nn.init.normal_(network.head.weight, std=0.5)  # a correction that is not zero (and not helpful)
    model = TrainedModel(network, card_for(config, (8, 16, 16)))
    predict = partial(predict_whole_volume, tiling=TileSettings(tile_zyx=(8, 16, 16), batch_size=2), amp=False)
    guarded, choice = guard_model(model, _volumes(2), predict=predict, device="cpu")
    assert choice is not None and guarded.card.guard.scale == choice.scale
    assert choice.score(choice.scale) >= choice.score(0.0)
    volume = torch.randn(1, 1, 8, 16, 16)
    with torch.inference_mode():
        base, full = network.residual_base(volume), network(volume)
        expected = base + choice.scale * (full - base)
        assert torch.allclose(guarded.network(volume), expected, atol=1e-5)
    save_model(guarded, tmp_path / "m.pt")  # the scale travels with the model file
    with torch.inference_mode():
        assert torch.allclose(load_model(tmp_path / "m.pt").network(volume), expected, atol=1e-5)


def test_a_scale_that_helps_on_average_but_hurts_one_study_is_not_chosen():
    volumes = _volumes(3, n=4)
    volumes = [
        ValidationVolume(v.name, v.channel, v.angle, v.fused, study="a" if i < 2 else "c")
        for i, v in enumerate(volumes)
    ]
    targets = {id(v.angle): v.fused for v in volumes}

    def helps_a_hurts_c(volume):
        if volume.study == "a":  # the whole way to the target
            return targets[id(volume.angle)]
        return volume.angle + 0.3 * np.sin(np.arange(volume.angle.size, dtype=np.float32)).reshape(volume.angle.shape)

    choice = choose_scale(volumes, helps_a_hurts_c, _identity)
    assert choice.score(1.0) > choice.score(0.0)  # the mean alone would take the correction
    assert choice.by_study[1.0]["c"] < choice.by_study[0.0]["c"]
    assert choice.scale == 0.0 and choice.keeps_every_study(0.0)
    assert set(choice.by_study[0.0]) == {"a", "c"}
