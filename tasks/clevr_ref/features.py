"""IEP grid features: ``features/{split}_features.h5``, dataset ``features`` (images, C, H, W) float32.

Row k is image index k (IEP's ``extract_features.py`` sorts the images by their number). The map
becomes H*W "regions" for the region-based spaces: cell (r, c) is region ``r * W + c`` with the
box of its part of the image (``cell_boxes``), so every space sees where a cell is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nas.errors import UserError

__all__ = ["cell_boxes", "read_grid_features"]


def open_hdf5(path: Path, what: str):
    """``path`` opened read-only with h5py; a missing or unreadable file is a one-line UserError."""
    import h5py

    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise UserError(f"{path}: not a readable HDF5 file ({error})") from None


def read_grid_features(path: str | Path, num_images: int) -> np.ndarray:
    """The (num_images, C, H, W) float32 features of one split, read whole into memory."""
    path = Path(path)
    with open_hdf5(path, "feature file") as handle:
        if "features" not in handle:
            raise UserError(f"{path}: no dataset 'features' (found {', '.join(handle.keys()) or 'none'})")
        data = handle["features"]
        if not hasattr(data, "shape"):
            raise UserError(f"{path}: 'features' is a group, expected a dataset (images, C, H, W)")
        if data.ndim != 4:
            raise UserError(f"{path}: 'features' should be (images, C, H, W), got shape {data.shape}")
        if data.dtype.kind != "f":
            raise UserError(f"{path}: 'features' should hold floats, got {data.dtype}")
        if data.shape[0] != num_images:
            raise UserError(f"{path}: 'features' has {data.shape[0]} rows, the scenes file has {num_images} "
                            "images (row k is image index k)")
        if min(data.shape[1:]) < 1:
            raise UserError(f"{path}: 'features' has an empty axis: shape {data.shape}")
        return np.asarray(data[:], np.float32)


def cell_boxes(grid_height: int, grid_width: int, image_height: int, image_width: int) -> np.ndarray:
    """(H*W, 4) float32 xyxy pixel boxes of the cells, row-major, over the image the grid was resized from."""
    ys = np.linspace(0.0, image_height, grid_height + 1)
    xs = np.linspace(0.0, image_width, grid_width + 1)
    rows, cols = np.meshgrid(np.arange(grid_height), np.arange(grid_width), indexing="ij")
    boxes = np.stack([xs[cols], ys[rows], xs[cols + 1], ys[rows + 1]], axis=-1)
    return boxes.reshape(-1, 4).astype(np.float32)
