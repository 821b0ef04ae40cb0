"""NeRF-synthetic (Blender) format: pose conventions, export -> load round trip, bad data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from nerf_lab.cameras import FoVPerspectiveCameras, look_at_view_transform
from nerf_lab.data import SceneValidationError, blender_scene, export_blender, procedural_scene
from nerf_lab.data.blender import c2w_to_p3d, p3d_to_c2w

SMALL = {"num_views": 6, "n_test_views": 2, "image_size": 24}


def _write_rgba(path, h, w, value=200, alpha=255, mode="RGBA"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, 4), value, dtype=np.uint8)
    arr[..., 3] = alpha
    im = Image.fromarray(arr)
    if mode != "RGBA":
        im = im.convert(mode)
    im.save(path)


def _c2w_looking_at_origin(eye):
    """OpenGL camera-to-world for a camera at ``eye`` looking at the origin, +Y up."""
    eye = np.asarray(eye, dtype=np.float64)
    back = eye / np.linalg.norm(eye)  # GL +Z points away from what the camera looks at
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, back, eye
    return m


def test_pose_conversion_matches_pytorch3d_look_at():
    # A GL camera at `eye` looking at the origin is the PyTorch3D look-at camera at `eye`.
    eye = (1.0, 2.0, 3.0)
    R, T = c2w_to_p3d(_c2w_looking_at_origin(eye))
    R_ref, T_ref = look_at_view_transform(eye=torch.tensor([eye]))
    assert np.allclose(R, R_ref[0].numpy(), atol=1e-6) and np.allclose(
        T, T_ref[0].numpy(), atol=1e-5
    )
    back = p3d_to_c2w(R, T)
    assert np.allclose(back, _c2w_looking_at_origin(eye), atol=1e-12)


def test_fov_uses_the_shorter_side(tmp_path):
    # W > H: camera_angle_x is horizontal, PyTorch3D's fov is vertical (the shorter side).
    W, H, cax = 40, 20, math.radians(70.0)
    meta = {
        "camera_angle_x": cax,
        "frames": [{"file_path": "./r_0", "transform_matrix": np.eye(4).tolist()}],
    }
    for split in ("train", "test"):
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps(meta))
    _write_rgba(tmp_path / "r_0.png", H, W)
    scene = blender_scene(tmp_path)
    assert scene.image_size == (H, W)
    cam = scene.cameras[[0]]
    # The GL camera at the origin looks along -Z; a point on the right edge of its horizontal
    # field of view lands on the image's right edge: NDC x = -W/H (PyTorch3D's +X is left).
    p = torch.tensor([[math.tan(cax / 2), 0.0, -1.0]])
    ndc = cam.transform_points(p[None])[0, 0]
    assert torch.allclose(ndc[:2], torch.tensor([-W / H, 0.0]), atol=1e-5)
    assert torch.allclose(cam.zfar, torch.tensor(6.0)) and torch.allclose(
        cam.znear, torch.tensor(2.0)
    )


@pytest.mark.parametrize("background", ["black", "white"])
def test_export_load_round_trip(tmp_path, background):
    scene = procedural_scene(**SMALL, background=background)
    out = export_blender(scene, tmp_path / "nerf")
    assert sorted(p.name for p in out.glob("transforms_*.json")) == [
        "transforms_test.json",
        "transforms_train.json",
    ]
    meta = json.loads((out / "transforms_train.json").read_text())
    assert meta["frames"][0]["file_path"] == "./train/r_0"
    loaded = blender_scene(out, background=background)
    assert loaded.background_color == scene.background_color
    for split in ("train", "test"):
        c0, i0, s0 = scene.split(split)
        c1, i1, s1 = loaded.split(split)
        for f in ("R", "T", "fov", "znear", "zfar", "aspect_ratio"):
            assert torch.allclose(getattr(c0, f), getattr(c1, f), atol=1e-5), f
        assert (i0 - i1).abs().max() <= 0.5 / 255 + 1e-6
        assert torch.equal(s0, s1)


def test_round_trip_with_val_and_downscale(tmp_path):
    scene = procedural_scene(**SMALL)
    scene.splits["val"] = torch.tensor([1])
    out = export_blender(scene, tmp_path / "nerf")
    loaded = blender_scene(out, splits=["train", "val", "test"])
    assert [len(loaded.splits[s]) for s in ("train", "val", "test")] == [6, 1, 2]
    small = blender_scene(out, downscale=2)
    assert small.image_size == (12, 12)
    expected = loaded.images.reshape(-1, 12, 2, 12, 2, 3).mean((2, 4))
    assert torch.allclose(small.images, expected, atol=1e-6)
    assert torch.allclose(small.cameras.fov, loaded.cameras.fov)
    without_val = blender_scene(out, splits=("train", "test"))
    assert "val" not in without_val.splits and len(without_val) == 8


def test_alpha_compositing_and_threshold(tmp_path):
    meta = {
        "camera_angle_x": 0.8,
        "frames": [{"file_path": "r_0.png", "transform_matrix": np.eye(4).tolist()}],
    }
    for split in ("train", "test"):
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps(meta))
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[..., :3] = 100
    arr[..., 3] = [[255, 128], [127, 0]]
    Image.fromarray(arr).save(tmp_path / "r_0.png")
    white = blender_scene(tmp_path, background="white")
    a = arr[..., 3] / 255.0
    expected = 100 / 255 * a + (1 - a)
    assert np.allclose(white.images[0, ..., 0].numpy(), expected, atol=1e-6)
    assert white.silhouettes[0].tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_bad_data_lists_every_problem(tmp_path):
    good = _c2w_looking_at_origin((0.0, 0.0, 4.0))
    scaled = good.copy()
    scaled[:3, :3] *= 2.0
    sheared = good.copy()
    sheared[3] = [0.0, 0.0, 1.0, 1.0]
    frames = [
        {"file_path": "./train/ok", "transform_matrix": good.tolist()},
        {"file_path": "./train/missing", "transform_matrix": good.tolist()},
        {"file_path": "./train/scaled", "transform_matrix": scaled.tolist()},
        {"file_path": "./train/lastrow", "transform_matrix": sheared.tolist()},
        {"file_path": "./train/gray", "transform_matrix": good.tolist()},
        {"file_path": "./train/garbage", "transform_matrix": good.tolist()},
        {"file_path": "./train/big", "transform_matrix": good.tolist()},
        {"transform_matrix": good.tolist()},
    ]
    (tmp_path / "transforms_train.json").write_text(
        json.dumps({"camera_angle_x": 0.7, "frames": frames})
    )
    (tmp_path / "transforms_test.json").write_text(
        json.dumps(
            {
                "camera_angle_x": 4.0,
                "frames": [{"file_path": "./train/ok", "transform_matrix": good.tolist()}],
            }
        )
    )
    (tmp_path / "transforms_val.json").write_text("{ not json")
    for name in ("ok", "scaled", "lastrow"):
        _write_rgba(tmp_path / "train" / f"{name}.png", 8, 8)
    _write_rgba(tmp_path / "train" / "gray.png", 8, 8, mode="L")
    (tmp_path / "train" / "garbage.png").write_bytes(b"this is not a png")
    _write_rgba(tmp_path / "train" / "big.png", 16, 16)
    with pytest.raises(SceneValidationError) as info:
        blender_scene(tmp_path)
    err = info.value
    assert isinstance(err, ValueError)
    msg = str(err)
    expected = [
        "transforms_val.json: cannot parse JSON",
        "frame 1: image",  # missing image
        "frame 2: transform_matrix is not a rigid transform",
        "det(R)",
        "frame 3: transform_matrix is not a rigid transform (last row",
        "frame 4: image",  # grayscale
        "mode 'L'",
        "frame 5: cannot read image",
        "big.png: size 16x16 differs from 8x8",
        "frame 7: 'file_path' is missing",
        "transforms_test.json frame 0: camera_angle_x = 4.0 is not in (0, pi)",
    ]
    for text in expected:
        assert text in msg, text
    assert len(err.problems) == 9


def test_missing_required_split_and_folder(tmp_path):
    with pytest.raises(SceneValidationError, match="not a folder"):
        blender_scene(tmp_path / "nope")
    with pytest.raises(SceneValidationError) as info:
        blender_scene(tmp_path)
    assert len(info.value.problems) == 2  # train and test both missing
    with pytest.raises(ValueError, match="downscale"):
        blender_scene(tmp_path, downscale=0)


def test_export_rejects_non_square_pixels(tmp_path):
    scene = procedural_scene(**SMALL, cache=False)
    cams = scene.cameras
    scene.cameras = FoVPerspectiveCameras(R=cams.R, T=cams.T, aspect_ratio=2.0)
    with pytest.raises(ValueError, match="aspect_ratio"):
        export_blender(scene, tmp_path)
