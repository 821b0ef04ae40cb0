import importlib.util
import sys
import types

import pytest
import torch

import nerf_lab.metrics_lpips as ml


@pytest.fixture(autouse=True)
def _fresh_models():
    ml._MODELS.clear()
    yield
    ml._MODELS.clear()


def _fake_lpips(tmp_path, monkeypatch, with_linear=True):
    """A stand-in ``lpips`` module: LPIPS(x, y, normalize) = mean |x - y| per image."""
    pkg = tmp_path / "lpips"
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    if with_linear:
        (pkg / "weights" / "v0.1" / "alex.pth").write_bytes(b"")
    mod = types.ModuleType("lpips")
    mod.__file__ = str(pkg / "__init__.py")
    calls = []

    class LPIPS(torch.nn.Module):
        def __init__(self, net, verbose):
            super().__init__()
            calls.append(net)

        def forward(self, x, y, normalize=False):
            assert normalize and x.shape[1] == 3
            return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)

    mod.LPIPS = LPIPS
    monkeypatch.setitem(sys.modules, "lpips", mod)
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub, calls


@pytest.mark.skipif(importlib.util.find_spec("lpips") is not None, reason="lpips is installed here")
def test_absent_in_a_plain_environment_with_the_reason():
    ok, reason = ml.lpips_available()
    assert not ok
    assert "lpips" in reason and "torchvision" in reason
    with pytest.raises(ml.LpipsUnavailable, match="LPIPS unavailable"):
        ml.lpips(torch.rand(1, 8, 8, 3), torch.rand(1, 8, 8, 3))


def test_absent_when_torchvision_is_missing(monkeypatch):
    def fail(name):
        raise ModuleNotFoundError("No module named 'torchvision'", name="torchvision")

    monkeypatch.setattr(ml.importlib, "import_module", fail)
    ok, reason = ml.lpips_available()
    assert not ok and "needs torchvision" in reason


def test_absent_without_cached_backbone_weights(tmp_path, monkeypatch):
    hub, calls = _fake_lpips(tmp_path, monkeypatch)
    ok, reason = ml.lpips_available("alex")
    assert not ok and "alexnet-owt-7be5be79.pth" in reason and "never downloads" in reason
    with pytest.raises(ml.LpipsUnavailable, match="backbone"):
        ml.lpips(torch.rand(1, 8, 8, 3), torch.rand(1, 8, 8, 3))
    assert calls == []  # no network was built (torchvision would have downloaded it)


def test_absent_without_linear_weights(tmp_path, monkeypatch):
    _fake_lpips(tmp_path, monkeypatch, with_linear=False)
    ok, reason = ml.lpips_available("alex")
    assert not ok and "linear-layer weights" in reason


def test_present_computes_per_image_values(tmp_path, monkeypatch):
    hub, calls = _fake_lpips(tmp_path, monkeypatch)
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    assert ml.lpips_available()[0]
    pred, target = torch.rand(3, 8, 9, 3), torch.rand(3, 8, 9, 3)
    out = ml.lpips(pred, target)
    torch.testing.assert_close(out, (pred - target).abs().mean(dim=(1, 2, 3)))
    ml.lpips(pred, target)
    assert calls == ["alex"]  # built once, then cached
    with pytest.raises(ValueError, match="n_images, H, W, 3"):
        ml.lpips(pred[0], target[0])
    with pytest.raises(ValueError, match="net"):
        ml.lpips_available("resnet")
