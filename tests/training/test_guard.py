"""The guard never returns a scale that scores below the residual base on the validation volumes."""

import numpy as np
import pytest

from fusemycell.training.guard import GUARD_SCALES, choose_scale
from fusemycell.training.validation_volumes import ValidationVolume


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
    assert choice.scale_by_channel == {"membrane": 0.0, "nucleus": 0.0}
    assert choice.score(0.0) == pytest.approx(0.0, abs=1e-9)  # the base is the input: N_SSIM 0
    assert all(choice.score(s) < 0 for s in GUARD_SCALES if s > 0)


def test_a_helpful_correction_is_kept_and_never_below_the_base():
    volumes = _volumes(1)
    targets = {id(v.angle): v.fused for v in volumes}

    def better(volume):  # halfway to the target
        return 0.5 * volume.angle + 0.5 * targets[id(volume.angle)]

    choice = choose_scale(volumes, better, _identity)
    assert choice.scale_by_channel == {"membrane": 1.0, "nucleus": 1.0} and choice.scale == 1.0
    assert choice.score(1.0) > 0.3 > choice.score(0.0) + 0.2  # halfway to the target beats the input by far
    assert set(choice.per_volume) == {"v0", "v1"} and set(choice.by_channel(1.0)) == {"nucleus", "membrane"}


def test_no_volume_is_an_error():
    with pytest.raises(ValueError, match="at least one validation volume"):
        choose_scale([], _identity, _identity)


def test_the_guarded_network_is_the_base_plus_the_scaled_correction(tmp_path):
    import torch

    from fusemycell.models.card import card_for
    from fusemycell.models.config import UNetConfig
    from fusemycell.models.model_file import TrainedModel, load_model, save_model
    from fusemycell.models.unet import UNet3D
    from fusemycell.training.guard import guard_model

    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4)
    network = UNet3D(config)
    torch.nn.init.normal_(network.head.weight, std=0.5)  # a correction that is not zero
    model = TrainedModel(network, card_for(config, (8, 16, 16)))
    volumes = _volumes(2)  # v0 nucleus, v1 membrane
    # what "the network at scale 1" predicts, by volume: from its base (the blurred input) nucleus the whole way
    # to its target (best at 1), membrane twice the way (past it: best at half the correction)
    amount = {id(v.angle): (v.fused, {"nucleus": 1.0, "membrane": 2.0}[v.channel]) for v in volumes}

    def predict(net, card, angle, position, where):
        target, share = amount[id(angle)]
        with torch.inference_mode():
            base = net.residual_base(torch.from_numpy(angle)[None, None]).numpy()[0, 0]
        return base + share * (target - base)

    guarded, choice = guard_model(model, volumes, predict=predict, device="cpu")
    assert choice.scale_by_channel == {"nucleus": 1.0, "membrane": 0.5}
    assert choice.scale == 0.5 and guarded.card.guard.scale == 0.5
    assert guarded.card.guard.scale_by_channel == choice.scale_by_channel
    assert guarded.card.architecture.residual_scale == pytest.approx(0.5 * config.residual_scale)
    volume = torch.randn(1, 1, 8, 16, 16)
    with torch.inference_mode():
        base, full = network.residual_base(volume), network(volume)
        expected = base + 0.5 * (full - base)
        assert not torch.allclose(full, expected, atol=1e-3)  # the scale matters on this volume
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
    assert choice.by_study(1.0)["c"] < choice.by_study(0.0)["c"]
    # both channels have a volume of study c: neither takes the whole correction, and membrane's is harmed at once
    assert choice.scale_by_channel["nucleus"] < 1.0 and choice.scale_by_channel["membrane"] == 0.0
    assert choice.per_volume["v2"][choice.scale_by_channel["nucleus"]] >= choice.per_volume["v2"][0.0]
    assert set(choice.by_study(0.0)) == {"a", "c"}


def _study_volumes(specs, seed=5):
    """Volumes of ``specs`` = ``[(name, channel, study), ...]`` (a bright cube and noise)."""
    template = _volumes(seed, n=len(specs))
    return [
        ValidationVolume(name, channel, v.angle, v.fused, study=study)
        for (name, channel, study), v in zip(specs, template)
    ]


def _towards_target(volumes, amount):
    """A correction that moves each volume ``amount[name]`` of the way to its target (negative: away from it)."""
    targets = {v.name: v.fused for v in volumes}

    def predict(volume):
        return volume.angle + amount[volume.name] * (targets[volume.name] - volume.angle)

    return predict


def test_each_channel_gets_its_own_scale():
    volumes = _study_volumes(
        [("n0", "nucleus", "a"), ("n1", "nucleus", "b"), ("m0", "membrane", "a"), ("m1", "membrane", "b")]
    )
    # nucleus: the correction helps; membrane: it moves away from the target
    predict = _towards_target(volumes, {"n0": 1.0, "n1": 1.0, "m0": -1.0, "m1": -1.0})
    choice = choose_scale(volumes, predict, _identity)
    assert choice.scale_by_channel == {"membrane": 0.0, "nucleus": 1.0}
    assert choice.scale == 0.0  # an input of unknown channel gets the most cautious
    assert choice.by_channel(1.0)["nucleus"] > choice.by_channel(0.0)["nucleus"]


def test_a_channel_takes_its_best_scale_among_those_that_keep_every_one_of_its_studies():
    """Study b of the nucleus is helped up to half the correction and harmed beyond (an overshoot past the target)."""
    volumes = _study_volumes([("n0", "nucleus", "a"), ("n1", "nucleus", "b"), ("m0", "membrane", "a")])
    # n1 moves 2.4x the way to its target at scale 1: past it, worse than the input beyond about 0.8
    predict = _towards_target(volumes, {"n0": 1.0, "n1": 2.4, "m0": 1.0})
    choice = choose_scale(volumes, predict, _identity)
    by_scale = {s: choice.per_volume["n1"][s] for s in GUARD_SCALES}
    allowed = [s for s in GUARD_SCALES if by_scale[s] >= by_scale[0.0]]
    assert 0.0 < max(allowed) < 1.0, by_scale  # the case is the one described
    best = max(allowed, key=lambda s: (choice.by_channel(s)["nucleus"], s))
    assert choice.scale_by_channel["nucleus"] == best and best in allowed
    assert choice.by_channel(1.0)["nucleus"] > choice.by_channel(0.0)["nucleus"]  # 1.0 helps the mean, yet harms b
    assert choice.scale_by_channel["membrane"] == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_no_validation_study_of_any_channel_ends_below_its_base(seed):
    """Random corrections, some helpful, some harmful, over studies shared by both channels: recomputed from each
    volume's own scores, every (channel, study) at its channel's chosen scale is at or above its base."""
    rng = np.random.default_rng(seed)
    specs = [(f"v{i}", ("nucleus", "membrane")[i % 2], "abc"[i % 3]) for i in range(9)]
    volumes = _study_volumes(specs, seed)
    predict = _towards_target(volumes, {name: float(rng.uniform(-1.5, 2.5)) for name, _, _ in specs})
    choice = choose_scale(volumes, predict, _identity)
    for channel in ("nucleus", "membrane"):
        chosen = choice.scale_by_channel[channel]
        for study in "abc":
            names = [n for n, c, s in specs if c == channel and s == study]
            if not names:
                continue
            at_choice = np.mean([choice.per_volume[n][chosen] for n in names])
            at_base = np.mean([choice.per_volume[n][0.0] for n in names])
            assert at_choice >= at_base - 1e-6, (channel, study, chosen)
        # and no other candidate that keeps every study has a better mean for the channel
        better = [
            s
            for s in GUARD_SCALES
            if choice.keeps_every_study(channel, s)
            and choice.by_channel(s)[channel] > choice.by_channel(chosen)[channel]
        ]
        assert not better, (channel, chosen, better)


def test_every_consumer_applies_the_scale_of_the_inputs_channel(tmp_path):
    from fusemycell.inference.apply import ChannelBackends, InferenceSettings
    from fusemycell.inference.onnx_backend import OnnxBackend, export_onnx
    from fusemycell.models.card import GuardSummary, card_for, channel_of
    from fusemycell.models.config import UNetConfig
    from fusemycell.models.model_file import TrainedModel, load_model, save_model
    from fusemycell.models.unet import UNet3D

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    unguarded = UNetConfig(depth=2, base_channels=4)
    network = UNet3D(unguarded)
    torch.nn.init.normal_(network.head.weight, std=0.5)
    guarded = unguarded.model_copy(update={"residual_scale": 0.25})  # the smallest of the channels'
    guard = GuardSummary(
        scale=0.25,
        scale_by_channel={"nucleus": 1.0, "membrane": 0.25},
        val_nssim={},
        val_nssim_by_channel={},
        volumes=2,
    )
    model = TrainedModel(UNet3D(guarded), card_for(guarded, (8, 16, 16), guard=guard))
    model.network.load_state_dict(network.state_dict())
    save_model(model, tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt")
    volume = torch.randn(1, 1, 8, 16, 16)
    with torch.inference_mode():
        base, full = network.residual_base(volume), network(volume)
    expected = {
        "nucleus": base + 1.0 * (full - base),
        "membrane": base + 0.25 * (full - base),
        None: base + 0.25 * (full - base),
    }
    assert channel_of("image_3_nucleus_angle.tif") == "nucleus" and channel_of("stack.tif") is None
    torch_backends = ChannelBackends(model, InferenceSettings(device="cpu", amp=False))
    export_onnx(model, tmp_path / "m.onnx")
    onnx_backends = ChannelBackends(
        model, InferenceSettings(device="cpu", backend="onnx"), OnnxBackend(tmp_path / "m.onnx")
    )
    for name, channel in (
        ("image_1_nucleus_angle.tif", "nucleus"),
        ("image_2_membrane_angle.tif", "membrane"),
        ("x.tif", None),
    ):
        for backends in (torch_backends, onnx_backends):
            got = backends(name)(volume.numpy())
            np.testing.assert_allclose(got, expected[channel].numpy(), atol=1e-4, err_msg=f"{name} {backends}")
    assert not np.allclose(expected["nucleus"], expected["membrane"])  # the two scales give different outputs
