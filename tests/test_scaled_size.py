"""One rounding rule for scaled sizes: half up (sniper_d2.geometry.scaled_length), used by chips,
the tiled predictor and AutoFocus alike."""

import math

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from sniper_d2.geometry import chip_content_size, scaled_length, scaled_size, tile_windows


def test_halves_round_up_not_to_even():
    # Python's round() gives 2, 4 and 0 here (half to even); the rule gives 3, 5 and 1.
    assert [scaled_length(5, 0.5), scaled_length(9, 0.5), scaled_length(1, 0.5)] == [3, 5, 1]
    assert scaled_size((5, 9), 0.5) == (3, 5)


@given(st.integers(1, 5000), st.floats(0.01, 8.0))
def test_scaled_length_is_the_nearest_int_with_halves_up(length, scale):
    n = scaled_length(length, scale)
    assert isinstance(n, int) and n == math.floor(length * scale + 0.5)


@given(st.integers(1, 3000), st.integers(1, 3000), st.floats(0.05, 4.0))
def test_a_whole_image_chip_has_the_scaled_image_size(h, w, scale):
    # A chip covering the whole image holds exactly the scaled image: the chip side of the planner's
    # crop and the predictor's scaled image agree.
    big = 10 ** 6
    assume(min(scaled_size((h, w), scale)) >= 1)  # else the image vanishes at this scale (an error)
    assert chip_content_size(np.array([0.0, 0.0, w, h]), scale, (h, w), big) == scaled_size((h, w), scale)


def test_the_predictor_tiles_the_image_at_the_rounded_half_up_size():
    from sniper_d2.inference.predictor import MultiScaleTiledPredictor, TiledInferenceParams

    params = TiledInferenceParams(scales=(0.5,), valid_ranges=((0, -1),), tile_size=64, tile_overlap=16)
    predictor = MultiScaleTiledPredictor(None, params)  # no model: tiling only
    [(_, scale, windows)] = predictor.scale_windows((101, 75))  # 50.5 x 37.5 -> 51 x 38
    assert scale == 0.5 and windows[:, 2].max() == 38 and windows[:, 3].max() == 51
    np.testing.assert_array_equal(windows, tile_windows((51, 38), 64, 16))


def test_autofocus_counts_the_pixels_of_the_same_tiles():
    from sniper_d2.inference.autofocus import full_inference_pixels
    from sniper_d2.inference.predictor import TiledInferenceParams

    params = TiledInferenceParams(scales=(0.5,), valid_ranges=((0, -1),), tile_size=64, tile_overlap=16)
    assert full_inference_pixels((101, 75), params).tolist() == [51 * 38]
