"""The image-grid helper used by the trained-models chapter places every image where it says."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from refimpl.plotting import plot_image_grid


def test_image_grid_places_image_i_at_row_i_div_ncol_and_column_i_mod_ncol() -> None:
    images = (torch.arange(7)[:, None, None, None] / 10.0).expand(7, 1, 2, 3)  # image i is constant i / 10
    fig, ax = plt.subplots()
    canvas = plot_image_grid(ax, images, ncol=3).get_array()
    assert canvas.shape == (3 * 3 - 1, 3 * 4 - 1)  # 3 rows of 2-pixel images, 3 columns of 3-pixel ones, 1-px gaps
    for i in range(7):
        r, c = divmod(i, 3)
        np.testing.assert_array_equal(canvas[r * 3 : r * 3 + 2, c * 4 : c * 4 + 3], i / 10.0)
    assert np.isnan(np.ma.filled(canvas, np.nan)[2, 0])  # the gap between rows
    flat = plot_image_grid(ax, images.reshape(7, 6)[:, :4], ncol=3).get_array()  # flat 2x2 images
    assert flat.shape == (3 * 3 - 1, 3 * 3 - 1)
    plt.close(fig)


def test_image_grid_clips_and_rejects_bad_shapes() -> None:
    fig, ax = plt.subplots()
    canvas = plot_image_grid(ax, torch.tensor([[[5.0, -5.0]]]), ncol=1).get_array()
    np.testing.assert_array_equal(canvas, [[1.0, -1.0]])
    with pytest.raises(ValueError, match="must be square"):
        plot_image_grid(ax, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="must have shape"):
        plot_image_grid(ax, torch.zeros(2, 3, 4, 4))
    plt.close(fig)
