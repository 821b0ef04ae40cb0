import logging
import os
import stat
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nerf_lab.metrics import psnr
from nerf_lab.video import (
    COLORMAPS,
    VideoBackendUnavailable,
    apply_colormap,
    colorize_depth,
    error_map,
    labelled_panel,
    mp4_available,
    to_uint8,
    write_gif,
    write_image,
    write_mp4,
    write_video,
)


def _frames(n: int, h: int = 32, w: int = 48) -> torch.Tensor:
    """Distinct, smooth frames (constant colour per frame, easy to check after H.264)."""
    levels = torch.linspace(0.1, 0.9, n)
    return levels.view(n, 1, 1, 1).expand(n, h, w, 3) * torch.tensor([1.0, 0.5, 0.25])


def _no_ffmpeg(monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import raises ImportError


# ----------------------------------------------------------------------------- video files
def test_mp4_decodes_to_the_frames_written(tmp_path):
    if not mp4_available()[0]:
        pytest.skip(mp4_available()[1])
    frames = _frames(9)
    path = write_mp4(tmp_path / "v.mp4", frames, fps=12)
    decoded = iio.imread(path, index=None, plugin="FFMPEG")
    assert decoded.shape == (9, 32, 48, 3)
    assert iio.immeta(path, plugin="FFMPEG")["fps"] == pytest.approx(12)
    # H.264 is lossy; a constant frame comes back within a few levels.
    err = np.abs(decoded.astype(np.float32) - to_uint8(frames).astype(np.float32))
    assert err.mean() < 3.0


def test_mp4_pads_odd_sizes_to_even(tmp_path):
    if not mp4_available()[0]:
        pytest.skip(mp4_available()[1])
    path = write_mp4(tmp_path / "odd.mp4", _frames(3, 17, 23), fps=5)
    assert iio.imread(path, index=None, plugin="FFMPEG").shape == (3, 18, 24, 3)


def test_gif_frame_count_duration_and_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_gif(tmp_path / "t.gif", _frames(6), fps=12.5)
    finally:
        os.umask(old)
    assert iio.imread(path, index=None).shape == (6, 32, 48, 3)
    meta = iio.immeta(path)
    assert meta["duration"] == 80 and meta["loop"] == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.gif"]


def test_write_video_writes_both_formats(tmp_path):
    if not mp4_available()[0]:
        pytest.skip(mp4_available()[1])
    out = write_video(tmp_path / "turntable", _frames(4), fps=8)
    assert set(out) == {"mp4", "gif"}
    assert out["mp4"].name == "turntable.mp4" and out["gif"].name == "turntable.gif"


def test_without_imageio_ffmpeg_mp4_is_skipped_with_a_clear_message(tmp_path, monkeypatch, caplog):
    _no_ffmpeg(monkeypatch)
    ok, reason = mp4_available()
    assert not ok and "pip install -e '.[video]'" in reason
    with pytest.raises(VideoBackendUnavailable, match=r"\[video\]"):
        write_mp4(tmp_path / "v.mp4", _frames(2))
    with caplog.at_level(logging.WARNING, logger="nerf_lab.video"):
        out = write_video(tmp_path / "v", _frames(3))
    assert set(out) == {"gif"}
    assert iio.imread(out["gif"], index=None).shape[0] == 3
    assert "imageio-ffmpeg" in caplog.text and "v.mp4" in caplog.text
    assert not (tmp_path / "v.mp4").exists()


def test_writers_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="n_frames, H, W, 3"):
        write_gif(tmp_path / "x.gif", torch.rand(4, 4, 3))
    with pytest.raises(ValueError, match="fps"):
        write_gif(tmp_path / "x.gif", _frames(2), fps=0)
    with pytest.raises(ValueError, match="formats"):
        write_video(tmp_path / "x", _frames(2), formats=("avi",))
    assert not list(tmp_path.iterdir())


def test_write_image_png_round_trip(tmp_path):
    img = torch.rand(5, 7, 3)
    path = write_image(tmp_path / "a.png", img)
    np.testing.assert_array_equal(iio.imread(path), to_uint8(img))


def test_to_uint8_clamps_and_rounds():
    x = torch.tensor([[-0.5, 0.0, 0.6 / 255, 1.0, 2.0, float("nan")]])
    np.testing.assert_array_equal(to_uint8(x), [[0, 0, 1, 255, 255, 0]])
    u8 = np.arange(6, dtype=np.uint8).reshape(1, 6)
    np.testing.assert_array_equal(to_uint8(u8), u8)


# ----------------------------------------------------------------------------- colormaps
@pytest.mark.parametrize("cmap", sorted(COLORMAPS))
def test_colormap_endpoints_and_interpolation(cmap):
    knots = COLORMAPS[cmap]
    torch.testing.assert_close(apply_colormap(torch.tensor(0.0), cmap), knots[0])
    torch.testing.assert_close(apply_colormap(torch.tensor(1.0), cmap), knots[-1])
    # Clamped outside [0, 1].
    torch.testing.assert_close(apply_colormap(torch.tensor([-3.0, 7.0]), cmap), knots[[0, -1]])
    # Vectorised vs a plain loop of linear interpolation between knots.
    x = torch.rand(50, dtype=torch.float64)
    got = apply_colormap(x.view(5, 10), cmap).view(50, 3)
    n = knots.shape[0]
    for i, v in enumerate(x.tolist()):
        pos = v * (n - 1)
        lo = min(int(pos), n - 2)
        f = pos - lo
        expected = [(1 - f) * float(knots[lo, c]) + f * float(knots[lo + 1, c]) for c in range(3)]
        torch.testing.assert_close(got[i], torch.tensor(expected), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cmap", sorted(COLORMAPS))
def test_colormap_tables_match_matplotlib(cmap):
    mpl = pytest.importorskip("matplotlib")
    lut = np.asarray(mpl.colormaps[cmap].colors)[:, :3]
    x = np.linspace(0, 1, 1021)
    ref = np.stack([np.interp(x, np.linspace(0, 1, len(lut)), lut[:, c]) for c in range(3)], -1)
    got = apply_colormap(torch.from_numpy(x), cmap).numpy()
    assert np.abs(got - ref).max() < 0.7 / 255


def test_colorize_depth_fixed_normalisation_and_opacity():
    knots = COLORMAPS["turbo"]
    depth = torch.tensor([[1.0, 2.0, 5.0], [0.5, 1.5, 1.0]])
    rgb = colorize_depth(depth, near=1.0, far=2.0)
    assert rgb.shape == (2, 3, 3)
    torch.testing.assert_close(rgb[0, 0], knots[0])  # near
    torch.testing.assert_close(rgb[0, 1], knots[-1])  # far
    torch.testing.assert_close(rgb[0, 2], knots[-1])  # beyond far: clamped
    torch.testing.assert_close(rgb[1, 0], knots[0])  # before near: clamped
    torch.testing.assert_close(rgb[1, 1], apply_colormap(torch.tensor(0.5)))
    alpha = torch.tensor([[1.0, 0.0, 0.5], [1.0, 1.0, 1.0]])
    bg = (1.0, 1.0, 1.0)
    blended = colorize_depth(depth[..., None], 1.0, 2.0, opacity=alpha, background=bg)
    torch.testing.assert_close(blended[0, 1], torch.ones(3))
    torch.testing.assert_close(blended[0, 2], 0.5 * knots[-1] + 0.5)
    with pytest.raises(ValueError, match="near must be < far"):
        colorize_depth(depth, 2.0, 1.0)


# ----------------------------------------------------------------------------- error, panel
def test_error_map_closed_form_and_psnr_consistency():
    pred = torch.full((4, 5, 3), 0.25)
    target = torch.full((4, 5, 3), 0.75)
    torch.testing.assert_close(error_map(pred, target), torch.full((4, 5), 0.5))
    torch.testing.assert_close(error_map(pred, target, "squared"), torch.full((4, 5), 0.25))
    a, b = torch.rand(6, 7, 3), torch.rand(6, 7, 3)
    mse = error_map(a, b, "squared").mean()
    torch.testing.assert_close(10 * torch.log10(1 / mse), psnr(a[None], b[None])[0])
    with pytest.raises(ValueError, match="same shape|shape"):
        error_map(a, b[:, :3])
    with pytest.raises(ValueError, match="kind"):
        error_map(a, b, "l3")


def test_labelled_panel_size_tiles_and_labels():
    h, w = 40, 64
    render, target = torch.rand(h, w, 3), torch.rand(h, w, 3)
    images = {
        "render": render,
        "target": target,
        "error": apply_colormap(error_map(render, target)),
        "depth": colorize_depth(torch.rand(h, w) * 3, 0.5, 3.0),
        "opacity": torch.rand(h, w),  # single channel: grey
    }
    panel = labelled_panel(images, label_height=14, separator=3)
    assert panel.shape == (14 + h, 5 * w + 4 * 3, 3)
    u8 = to_uint8(panel)
    for i, (name, img) in enumerate(images.items()):
        x0 = i * (w + 3)
        tile = u8[14:, x0 : x0 + w]
        expected = to_uint8(img if img.dim() == 3 else img[..., None].expand(h, w, 3))
        np.testing.assert_array_equal(tile, expected, err_msg=name)
        label = u8[:14, x0 : x0 + w]
        assert label.max() > 128, f"no text drawn for {name}"
    # Separators stay background.
    assert (u8[:, w : w + 3] == 0).all()


def test_labelled_panel_rejects_mixed_sizes():
    with pytest.raises(ValueError, match="same"):
        labelled_panel({"a": torch.rand(4, 4, 3), "b": torch.rand(4, 5, 3)})
    with pytest.raises(ValueError, match="label_height"):
        labelled_panel({"a": torch.rand(4, 4, 3)}, label_height=0)
