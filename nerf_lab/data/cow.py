"""The tutorial's cow: PyTorch3D's ``generate_cow_renders`` reproduced, and the cow as a Scene."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import torch

from nerf_lab.cameras import FoVPerspectiveCameras, look_at_view_transform
from nerf_lab.data import cache as _cache
from nerf_lab.data.bounds import bounding_radius, orbit_depth_range
from nerf_lab.data.mesh import TexturedMesh, load_obj_mesh, normalize_mesh
from nerf_lab.data.render import SILHOUETTE_MODES, render_mesh
from nerf_lab.data.scene import Scene, SceneValidationError, concat_cameras
from nerf_lab.data.views import held_out_interior, orbit_cameras
from nerf_lab.validate import check_choice, check_int, check_number

COW_URL = "https://dl.fbaipublicfiles.com/pytorch3d/data/cow_mesh/"
COW_FILES = {
    "cow.obj": "62337f06b4aa4f2eaa95f854553a02039d853365a78b0a581c26ece5691a6d99",
    "cow.mtl": "ce6398d52486f81f2c329b1683ad4fedce970471aa36e589e05c5177432db6cb",
    "cow_texture.png": "cddabbae52a666173e7953e238b88340d285044dc20b36f8ed3f1a41db534fa5",
}
DOWNLOAD_TIMEOUT_S = 30.0

# The tutorial's settings.
COW_DISTANCE = 2.7
COW_LIGHT_LOCATION = (0.0, 0.0, -3.0)
COW_IMAGE_SIZE = 128


class CowMeshUnavailableError(FileNotFoundError):
    """The cow mesh is neither on disk nor downloadable (e.g. no network)."""


def download_cow_mesh(dest: str | Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download the missing cow files into ``dest``, verify their SHA-256, write atomically.

    Raises:
        CowMeshUnavailableError: a download failed; the message names the URL and where to put
            the files by hand.
        SceneValidationError: a downloaded file has the wrong checksum.
    """
    dest = Path(dest)
    for name, sha in COW_FILES.items():
        target = dest / name
        if target.is_file():
            continue
        url = COW_URL + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise CowMeshUnavailableError(
                f"Could not download the cow mesh file {url} ({e}). Without network access, "
                f"put cow.obj, cow.mtl and cow_texture.png in {dest} (they are published at "
                f"{COW_URL}) or pass data_dir=<a folder holding them> "
                "(data.data_dir=... on the nerf_lab.train command line)."
            ) from e
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise SceneValidationError(
                [f"{url}: SHA-256 {got} does not match the expected {sha}"], "cow mesh download"
            )
        _cache.atomic_write_bytes(target, lambda f, data=data: f.write(data))
    return dest


def cow_mesh_dir(data_dir: str | Path | None = None) -> Path:
    """The folder holding ``cow.obj``, ``cow.mtl`` and ``cow_texture.png``.

    Args:
        data_dir: a folder with the three files; ``None``: ``<cache dir>/cow_mesh``, downloaded
            there on first use.

    Raises:
        SceneValidationError: ``data_dir`` lacks some of the files (all missing ones listed).
        CowMeshUnavailableError: the download is needed and fails.
    """
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        missing = [f"{folder / n} is missing" for n in COW_FILES if not (folder / n).is_file()]
        if missing:
            raise SceneValidationError(missing, f"cow mesh folder {folder}")
        return folder
    folder = _cache.cache_dir() / "cow_mesh"
    if all((folder / n).is_file() for n in COW_FILES):
        return folder
    return download_cow_mesh(folder)


def load_cow_mesh(data_dir: str | Path | None = None) -> TexturedMesh:
    """The cow, read as ``load_objs_as_meshes`` reads it and normalised as the tutorial does."""
    return normalize_mesh(load_obj_mesh(cow_mesh_dir(data_dir) / "cow.obj"))


def cow_cameras(num_views: int = 40, azimuth_range: float = 180.0) -> FoVPerspectiveCameras:
    """The tutorial's cameras: distance 2.7, elevation 0, azimuth ``linspace(-r, r, n) + 180``."""
    elev = torch.linspace(0, 0, num_views)
    azim = torch.linspace(-azimuth_range, azimuth_range, num_views) + 180.0
    R, T = look_at_view_transform(dist=COW_DISTANCE, elev=elev, azim=azim)
    return FoVPerspectiveCameras(R=R, T=T)


def render_cow(
    mesh: TexturedMesh, cameras: FoVPerspectiveCameras, image_size: int, silhouette: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tutorial's shading of the cow: point light at (0, 0, -3), black background.

    Returns:
        images ``(n_views, S, S, 3)`` and silhouettes ``(n_views, S, S)``.
    """
    return render_mesh(
        mesh,
        cameras,
        image_size,
        light_location=COW_LIGHT_LOCATION,
        background_color=(0.0, 0.0, 0.0),
        silhouette=silhouette,
    )


def generate_cow_renders(
    num_views: int = 40,
    data_dir: str | Path | None = None,
    azimuth_range: float = 180,
    *,
    image_size: int = COW_IMAGE_SIZE,
    silhouette: str = "pytorch3d",
) -> tuple[FoVPerspectiveCameras, torch.Tensor, torch.Tensor]:
    """Renders of the cow, reproducing PyTorch3D's tutorial ``generate_cow_renders``.

    The mesh is centred on its mean vertex and scaled into ``[-1, 1]^3``; the cameras sit at
    distance 2.7, elevation 0 and azimuths ``linspace(-azimuth_range, azimuth_range,
    num_views) + 180``; a point light at ``(0, 0, -3)``; Phong shading of the UV texture on
    black; silhouettes as the tutorial's soft silhouette thresholded at 1e-4.

    Args:
        num_views: number of views.
        data_dir: folder with ``cow.obj``, ``cow.mtl``, ``cow_texture.png``; ``None``: the
            cache dir (downloaded on first use).
        azimuth_range: half-range of the azimuths in degrees.
        image_size: side of the square images (the tutorial: 128).
        silhouette: ``"pytorch3d"`` (the tutorial's, ~2 px dilated) or ``"hard"`` (coverage).

    Returns:
        ``cameras`` (``num_views``), ``images (num_views, S, S, 3)`` float32 in [0, 1] and
        ``silhouettes (num_views, S, S)`` float32 in {0, 1}.
    """
    check_int("num_views", num_views)
    check_int("image_size", image_size)
    check_choice("silhouette", silhouette, SILHOUETTE_MODES)
    cameras = cow_cameras(num_views, float(azimuth_range))
    images, silhouettes = render_cow(load_cow_mesh(data_dir), cameras, image_size, silhouette)
    return cameras, images, silhouettes


def cow_scene(
    data_dir: str | Path | None = None,
    num_views: int = 40,
    azimuth_range: float = 180.0,
    image_size: int = COW_IMAGE_SIZE,
    n_test_views: int = 10,
    train_on_all_views: bool = False,
    elevated_test_views: int = 0,
    elevation_test: float = 30.0,
    silhouette: str = "pytorch3d",
    cache: bool = True,
) -> Scene:
    """The tutorial's cow as a :class:`Scene` with held-out test views.

    The first ``num_views`` views are exactly :func:`generate_cow_renders`'s. Splits:

    * default: ``n_test_views`` of them (evenly spread, never adjacent, never the first or
      last) form ``"test"``; each lies half-way between its two training neighbours; the rest
      is ``"train"``;
    * ``train_on_all_views``: ``"train"`` is all ``num_views`` tutorial views and ``"test"``
      is ``n_test_views`` extra renders at the midpoints between consecutive training azimuths;
    * ``elevated_test_views > 0`` adds ``"test_elevated"``: that many views at elevation
      ``elevation_test``, azimuths spread over the training range (extrapolation).

    Args:
        data_dir: cow mesh folder (see :func:`generate_cow_renders`).
        num_views: number of tutorial views.
        azimuth_range: half-range of the azimuths in degrees.
        image_size: image side in pixels.
        n_test_views: number of test views.
        train_on_all_views: train on all tutorial views (test views rendered in between).
        elevated_test_views: number of elevated test views (0: none).
        elevation_test: their elevation in degrees.
        silhouette: ``"pytorch3d"`` or ``"hard"``.
        cache: reuse / store the rendered scene in ``<cache dir>/scenes``.

    Returns:
        The scene; its views are ordered: tutorial views, then extra test views, then
        elevated views.
    """
    check_int("num_views", num_views)
    check_int("image_size", image_size)
    check_int("n_test_views", n_test_views)
    check_int("elevated_test_views", elevated_test_views, 0)
    check_number("elevation_test", elevation_test, -90, 90, low_open=True, high_open=True)
    check_choice("silhouette", silhouette, SILHOUETTE_MODES)
    if train_on_all_views:
        if n_test_views > num_views - 1:
            raise ValueError(
                f"n_test_views={n_test_views} exceeds the {num_views - 1} midpoints between "
                f"num_views={num_views} training views."
            )
    else:
        held_out_interior(num_views, n_test_views)  # validates the numbers
    folder = cow_mesh_dir(data_dir)
    params = {
        "num_views": num_views,
        "azimuth_range": float(azimuth_range),
        "image_size": image_size,
        "n_test_views": n_test_views,
        "train_on_all_views": bool(train_on_all_views),
        "elevated_test_views": elevated_test_views,
        "elevation_test": float(elevation_test),
        "silhouette": silhouette,
    }
    files = [folder / n for n in COW_FILES]

    def build() -> Scene:
        return _build_cow_scene(folder, **params)

    return _cache.cached_scene("cow", params, files, build, cache=cache)


def _build_cow_scene(
    folder: Path,
    num_views: int,
    azimuth_range: float,
    image_size: int,
    n_test_views: int,
    train_on_all_views: bool,
    elevated_test_views: int,
    elevation_test: float,
    silhouette: str,
) -> Scene:
    tutorial = cow_cameras(num_views, azimuth_range)
    azim = torch.linspace(-azimuth_range, azimuth_range, num_views) + 180.0
    cams = [tutorial]
    splits: dict[str, torch.Tensor] = {}
    n = num_views
    if train_on_all_views:
        pairs = torch.linspace(0, num_views - 2, n_test_views).round().long()
        if n_test_views == 1:
            pairs = torch.tensor([(num_views - 1) // 2])
        mid = 0.5 * (azim[pairs] + azim[pairs + 1])
        cams.append(orbit_cameras(mid, torch.zeros_like(mid), COW_DISTANCE))
        splits["train"] = torch.arange(num_views)
        splits["test"] = torch.arange(n, n + n_test_views)
        n += n_test_views
    else:
        test = held_out_interior(num_views, n_test_views)
        mask = torch.ones(num_views, dtype=torch.bool)
        mask[test] = False
        splits["train"] = mask.nonzero()[:, 0]
        splits["test"] = test
    if elevated_test_views > 0:
        k = elevated_test_views
        frac = (torch.arange(k, dtype=torch.float32) + 0.5) / k
        e_azim = 180.0 - azimuth_range + 2.0 * azimuth_range * frac
        cams.append(orbit_cameras(e_azim, torch.full_like(e_azim, elevation_test), COW_DISTANCE))
        splits["test_elevated"] = torch.arange(n, n + k)
        n += k
    cameras = concat_cameras(cams) if len(cams) > 1 else tutorial
    mesh = load_cow_mesh(folder)
    images, silhouettes = render_cow(mesh, cameras, image_size, silhouette)
    # Every view (training, in-between and elevated) orbits the origin at COW_DISTANCE.
    near, far = orbit_depth_range(COW_DISTANCE, bounding_radius(mesh.verts))
    return Scene(
        name="cow",
        cameras=cameras,
        images=images,
        silhouettes=silhouettes,
        splits=splits,
        background_color=(0.0, 0.0, 0.0),
        near=near,
        far=far,
    )
