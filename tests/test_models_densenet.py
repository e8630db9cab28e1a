"""DenseNetDetector: the reference head, normalisation inside, the L2 term, and loading local weights."""

from __future__ import annotations

import re

import pytest
import timm
import torch
import torchvision
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file
from torch import nn

from ffd.errors import UserError, WeightsError
from ffd.models import DenseNetDetector, create_net, densenet


@pytest.fixture(scope="module")
def net() -> DenseNetDetector:
    torch.manual_seed(0)
    return DenseNetDetector(pretrained=False).eval()


def _images(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randint(
        0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )


def test_head_is_the_reference_head(net: DenseNetDetector) -> None:
    assert net.backbone.global_pool.pool_type == "avg"  # timm's global average pool ends the backbone
    layers = list(net.head)
    assert [type(m) for m in layers] == [
        nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear
    ]  # fmt: skip
    norm1, drop1, fc1, _, norm2, drop2, fc2 = layers
    assert norm1.num_features == 1024 == fc1.in_features
    assert (fc1.out_features, norm2.num_features, fc2.in_features, fc2.out_features) == (256, 256, 256, 1)
    assert (drop1.p, drop2.p) == (0.5, 0.4)


def test_normalisation_is_imagenet_on_0_255(net: DenseNetDetector) -> None:
    images = _images()
    expected = (images.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(net.normalize(images), expected)


def test_wrong_layout_is_refused_clearly(net: DenseNetDetector) -> None:
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\).*permute"):
        net(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))


def test_regularization_loss_is_keras_l2_on_the_hidden_layer_only(net: DenseNetDetector) -> None:
    weight = net.head.fc1.weight
    expected = 1e-4 * sum(float(w) ** 2 for w in weight.detach().flatten().tolist())
    assert net.regularization_loss().item() == pytest.approx(expected, rel=1e-5)
    net.regularization_loss().backward()
    assert weight.grad is not None and torch.allclose(weight.grad, 2e-4 * weight.detach())
    assert net.head.fc2.weight.grad is None and net.head.fc1.bias.grad is None
    weight.grad = None


def test_factory_builds_and_refuses_unknown_names_and_arguments() -> None:
    assert isinstance(create_net("densenet", pretrained=False, image_size=64), DenseNetDetector)
    with pytest.raises(UserError, match="densenet, vit"):
        create_net("resnet")
    with pytest.raises(TypeError, match="hidden_units"):
        create_net("densenet", pretrained=False, hidden_units=3)


# ---- local weights -----------------------------------------------------------------------------------


def _timm_state() -> dict[str, torch.Tensor]:
    """A fresh timm densenet121 with its ImageNet-style classifier, as timm's released files hold it."""
    torch.manual_seed(2)
    return timm.create_model("densenet121", num_classes=1000).state_dict()


def _torchvision_legacy_state() -> dict[str, torch.Tensor]:
    """torchvision's densenet121 as in its released files: keys like 'norm.1', no num_batches_tracked."""
    torch.manual_seed(3)
    state = torchvision.models.densenet121(weights=None).state_dict()
    legacy = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        legacy[re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)] = value
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    return legacy


def _save(state: dict[str, torch.Tensor], path) -> str:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return str(path)


def _assert_loaded(net: DenseNetDetector, state: dict[str, torch.Tensor]) -> None:
    loaded = net.backbone.state_dict()
    torch.testing.assert_close(loaded["features.conv0.weight"], state["features.conv0.weight"])
    key = "features.denseblock4.denselayer16.conv2.weight"
    legacy = "features.denseblock4.denselayer16.conv.2.weight"
    torch.testing.assert_close(loaded[key], state.get(key, state.get(legacy)))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loads_timm_format_file(tmp_path, suffix: str) -> None:
    state = _timm_state()
    net = DenseNetDetector(weights=_save(state, tmp_path / f"densenet121{suffix}"))
    _assert_loaded(net, state)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loads_torchvision_legacy_format_file(tmp_path, suffix: str) -> None:
    state = _torchvision_legacy_state()
    net = DenseNetDetector(weights=_save(state, tmp_path / f"densenet121-tv{suffix}"))
    _assert_loaded(net, state)


def test_weights_of_another_architecture_are_refused_with_the_keys(tmp_path) -> None:
    path = _save(timm.create_model("resnet18").state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(
        WeightsError, match=r"resnet18\.pth does not fit .*densenet121.* missing keys \(features"
    ):
        DenseNetDetector(weights=path)


def test_a_file_with_a_stray_key_is_refused(tmp_path) -> None:
    state = {**_timm_state(), "features.extra.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"no missing keys; 1 unexpected keys \(features\.extra\.weight\)"):
        DenseNetDetector(weights=_save(state, tmp_path / "stray.pth"))


def test_unreadable_and_absent_files_are_refused(tmp_path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"garbage\.pth cannot be read as a weights file"):
        DenseNetDetector(weights=str(garbage))
    with pytest.raises(WeightsError, match=r"absent\.pth does not exist\. Fix model\.net\.weights"):
        DenseNetDetector(weights=str(tmp_path / "absent.pth"))


def test_pickled_code_is_never_run(tmp_path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    path = tmp_path / "evil.pth"
    torch.save({"features.conv0.weight": Payload()}, path)
    with pytest.raises(WeightsError, match="weights_only=True") as error:
        DenseNetDetector(weights=str(path))
    # timm wraps PyTorch's refusal in its own, which also advises weights_only=False: never relayed.
    message = str(error.value)
    assert "never runs pickled code" in message and "retry with" not in message and "\n" not in message


def test_a_failed_download_names_both_options(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' (simulated offline)")

    # Both download paths timm may take; the test never touches the network.
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", offline)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", offline)
    monkeypatch.setattr(densenet, "hub_unreachable", lambda: None)  # the hub answers, the download fails
    with pytest.raises(WeightsError) as error:
        DenseNetDetector(pretrained=True)
    message = str(error.value)
    assert "model.net.weights=PATH" in message and "model.net.pretrained=false" in message
    assert "densenet121" in message and "simulated offline" in message


def test_an_unreachable_hub_is_told_at_once_and_only_the_cache_is_tried(monkeypatch) -> None:
    """Offline, huggingface_hub would retry for about a minute; one refused connection says it at once."""
    attempts, offline_mode = [], []

    def refused(address, timeout):
        attempts.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    def from_cache_only(*args, **kwargs):
        offline_mode.append(hf_constants.HF_HUB_OFFLINE)
        raise FileNotFoundError("not in the local cache")

    for variable in densenet.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(densenet.socket, "create_connection", refused)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", from_cache_only)
    with pytest.raises(WeightsError, match=r"huggingface\.co cannot be reached: Connection refused; not in"):
        DenseNetDetector(pretrained=True)
    assert attempts == [("huggingface.co", 443)] and offline_mode == [True]
    assert hf_constants.HF_HUB_OFFLINE is False  # restored

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # the proxy decides: no probe
    assert densenet.hub_unreachable() is None and len(attempts) == 1
