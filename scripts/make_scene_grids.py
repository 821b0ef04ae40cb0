"""Write grids of scene views for the docs: ``docs/images/cow_views.png`` and
``docs/images/procedural_views.png``.

Usage::

    python scripts/make_scene_grids.py [--cow-dir ../shared/data/cow_mesh] [--out docs/images]

Each grid shows the training views in order, then the held-out test views in a red frame.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nerf_lab.data import Scene, cow_scene, procedural_scene

REPO = Path(__file__).resolve().parents[1]


def scene_grid(scene: Scene, columns: int = 10, pad: int = 2) -> np.ndarray:
    """Tile every view of ``scene`` (train first, then test framed in red) into one image.

    Returns:
        ``(rows * (H + pad) + pad, columns * (W + pad) + pad, 3)`` uint8.
    """
    H, W = scene.image_size
    order = [(int(i), False) for i in scene.splits["train"]]
    order += [(int(i), True) for s, idx in scene.splits.items() if s != "train" for i in idx]
    rows = (len(order) + columns - 1) // columns
    grid = np.full((rows * (H + pad) + pad, columns * (W + pad) + pad, 3), 255, dtype=np.uint8)
    images = (scene.images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    for k, (i, held_out) in enumerate(order):
        r, c = divmod(k, columns)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        if held_out:
            grid[y - pad : y + H + pad, x - pad : x + W + pad] = (220, 30, 30)
        grid[y : y + H, x : x + W] = images[i]
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cow-dir", type=Path, default=REPO.parent / "shared/data/cow_mesh")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cow = cow_scene(data_dir=args.cow_dir, train_on_all_views=True, n_test_views=10)
    Image.fromarray(scene_grid(cow)).save(args.out / "cow_views.png")
    proc = procedural_scene(num_views=40, n_test_views=10, image_size=96)
    Image.fromarray(scene_grid(proc)).save(args.out / "procedural_views.png")
    print(f"wrote {args.out / 'cow_views.png'} and {args.out / 'procedural_views.png'}")


if __name__ == "__main__":
    main()
