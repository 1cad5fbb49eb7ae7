"""interpolate/Upsample, pixel (un)shuffle, unfold/fold and channel dropout against PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close, check, rand

INTERP = [
    ((2, 3, 5), {"scale_factor": 2}),
    ((2, 3, 5), {"size": 7, "mode": "nearest"}),
    ((1, 2, 4, 5), {"scale_factor": 2}),
    ((1, 2, 4, 5), {"size": (3, 7)}),
    ((1, 2, 4, 5), {"scale_factor": (1.5, 0.6)}),
    ((1, 2, 5, 3), {"scale_factor": 1.7, "recompute_scale_factor": True}),
    ((1, 2, 4, 5), {"size": (7, 3), "mode": "nearest-exact"}),
    ((2, 3, 5), {"scale_factor": 2, "mode": "linear"}),
    ((2, 3, 5), {"size": 3, "mode": "linear", "align_corners": True}),
    ((1, 2, 4, 5), {"scale_factor": 2, "mode": "bilinear"}),
    ((1, 2, 4, 5), {"scale_factor": 2, "mode": "bilinear", "align_corners": True}),
    ((1, 2, 4, 5), {"size": (3, 9), "mode": "bilinear", "align_corners": False}),
    ((1, 2, 4, 5), {"size": (7, 2), "mode": "bilinear", "align_corners": True}),
    ((1, 2, 5, 4), {"scale_factor": 1.3, "mode": "bilinear"}),
    ((1, 2, 3, 4, 5), {"scale_factor": 2, "mode": "trilinear"}),
    ((1, 2, 4, 5), {"scale_factor": 2, "mode": "bicubic"}),
    ((1, 2, 4, 5), {"size": (3, 9), "mode": "bicubic", "align_corners": True}),
    ((1, 2, 6, 5), {"scale_factor": (0.7, 1.6), "mode": "bicubic"}),
    ((1, 2, 3, 4, 5), {"size": (2, 5, 4), "mode": "nearest"}),
    ((1, 2, 6, 8), {"size": (3, 4), "mode": "area"}),
    ((1, 2, 7), {"scale_factor": 0.5, "mode": "area"}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, kw", INTERP)
def test_interpolate_matches_torch(shape, kw, dtype):
    check(lambda lib, x: lib.nn.functional.interpolate(x, **kw), rand(*shape, dtype=dtype))


def test_upsample_modules_match_torch():
    x = rand(1, 2, 3, 4)
    for args, kw in [((), {"scale_factor": 2}), ((), {"size": (5, 6), "mode": "bilinear", "align_corners": True})]:
        em, tm = ember.nn.Upsample(*args, **kw), torch.nn.Upsample(*args, **kw)
        assert repr(em) == repr(tm)
        assert_close(em(ember.tensor(x)), tm(torch.tensor(x)))
    for name in ("UpsamplingNearest2d", "UpsamplingBilinear2d"):
        em, tm = getattr(ember.nn, name)(scale_factor=2), getattr(torch.nn, name)(scale_factor=2)
        assert repr(em) == repr(tm)
        assert_close(em(ember.tensor(x)), tm(torch.tensor(x)))
    assert ember.nn.Upsample(scale_factor=(2, 3)).scale_factor == (2.0, 3.0)


@pytest.mark.parametrize(
    "shape, kw, exc",
    [
        ((2, 3, 4), {"scale_factor": 2, "mode": "bilinear"}, NotImplementedError),
        ((2, 3, 4), {"scale_factor": 2, "size": 3}, ValueError),
        ((2, 3, 4), {}, ValueError),
        ((2, 3, 4), {"scale_factor": 2, "align_corners": True}, ValueError),
        ((2, 3, 4), {"size": (2, 3)}, ValueError),
        ((2, 3, 4), {"scale_factor": 2, "mode": "foo"}, NotImplementedError),
        ((3,), {"scale_factor": 2}, NotImplementedError),
        ((2, 3, 4), {"scale_factor": 2, "mode": "linear", "antialias": True}, ValueError),
    ],
)
def test_interpolate_errors_match_torch(shape, kw, exc):
    with pytest.raises(exc):
        torch.nn.functional.interpolate(torch.ones(shape), **kw)
    with pytest.raises(exc):
        ember.nn.functional.interpolate(ember.ones(shape), **kw)


@pytest.mark.parametrize("shape, r", [((1, 8, 3, 3), 2), ((2, 3, 18, 2, 4), 3), ((9, 2, 2), 3)])
def test_pixel_shuffle_roundtrip_matches_torch(shape, r):
    check(lambda lib, x: lib.nn.functional.pixel_shuffle(x, r), rand(*shape))
    up = (*shape[:-3], shape[-3] // (r * r), shape[-2] * r, shape[-1] * r)
    check(lambda lib, x: lib.nn.functional.pixel_unshuffle(x, r), rand(*up))
    assert repr(ember.nn.PixelShuffle(r)) == repr(torch.nn.PixelShuffle(r))
    assert repr(ember.nn.PixelUnshuffle(r)) == repr(torch.nn.PixelUnshuffle(r))


def test_pixel_shuffle_errors():
    for fn, shape in [("pixel_shuffle", (1, 5, 2, 2)), ("pixel_unshuffle", (1, 5, 3, 2)), ("pixel_shuffle", (5, 2))]:
        with pytest.raises(RuntimeError):
            getattr(torch.nn.functional, fn)(torch.ones(shape), 2)
        with pytest.raises(RuntimeError, match=fn):
            getattr(ember.nn.functional, fn)(ember.ones(shape), 2)


UNFOLD = [
    ((2, 3, 5, 6), {"kernel_size": 2}),
    ((2, 3, 5, 6), {"kernel_size": (2, 3), "stride": 2, "padding": 1}),
    ((1, 2, 7, 7), {"kernel_size": 3, "dilation": 2, "padding": (1, 2), "stride": (2, 1)}),
    ((3, 4, 4), {"kernel_size": 2}),
]


@pytest.mark.parametrize("shape, kw", UNFOLD)
def test_unfold_fold_match_torch(shape, kw):
    check(lambda lib, x: lib.nn.functional.unfold(x, **kw), rand(*shape))
    cols = torch.nn.functional.unfold(torch.zeros(shape), **kw)
    check(lambda lib, c: lib.nn.functional.fold(c, shape[-2:], **kw), rand(*cols.shape))
    em, tm = ember.nn.Unfold(**kw), torch.nn.Unfold(**kw)
    assert repr(em) == repr(tm)
    em, tm = ember.nn.Fold(shape[-2:], **kw), torch.nn.Fold(shape[-2:], **kw)
    assert repr(em) == repr(tm)


@pytest.mark.parametrize(
    "fn, args, match",
    [
        ("unfold", ((1, 2, 3, 3), 5), "sliding blocks"),
        ("fold", ((1, 8, 3), (3, 3), 2), "number of sliding blocks"),
        ("fold", ((1, 7, 4), (3, 3), 2), "divisible by the product of kernel_size"),
    ],
)
def test_unfold_fold_errors(fn, args, match):
    shape, *rest = args
    with pytest.raises(RuntimeError):
        getattr(torch.nn.functional, fn)(torch.ones(shape), *rest)
    with pytest.raises(RuntimeError, match=match):
        getattr(ember.nn.functional, fn)(ember.ones(shape), *rest)


# ---- channel dropout: which ranks warn, which raise, and which dims share one draw


def _warnings_of(lib, fn, shape):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            getattr(lib.nn.functional, fn)(lib.ones(shape), 0.5, True)
        except RuntimeError as e:
            return f"error: {str(e)[:40]}"
    return [str(x.message)[:60] for x in w if issubclass(x.category, UserWarning)]


def _shared_axes(lib, fn, shape) -> set:
    """The axes along which one random draw is shared, seen over 30 calls."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = getattr(lib.nn.functional, fn)
        masks = np.stack([f(lib.ones(shape), 0.5, True).numpy() != 0 for _ in range(30)])
    return {ax for ax in range(len(shape)) if (masks == masks.take([0], ax + 1)).all()}


@pytest.mark.parametrize(
    "fn, shape",
    [
        ("dropout1d", (3,)),
        ("dropout1d", (4, 6)),
        ("dropout1d", (2, 4, 6)),
        ("dropout1d", (2, 3, 4, 5)),
        ("dropout2d", (3,)),
        ("dropout2d", (4, 6)),
        ("dropout2d", (4, 6, 5)),
        ("dropout2d", (2, 4, 6, 5)),
        ("dropout2d", (2, 3, 4, 6, 5)),
        ("dropout3d", (4, 6)),
        ("dropout3d", (4, 6, 5)),
        ("dropout3d", (3, 4, 6, 5)),
        ("dropout3d", (2, 3, 4, 6, 5)),
        ("dropout3d", (1, 2, 3, 4, 6, 5)),
    ],
)
def test_channel_dropout_ranks_match_torch(fn, shape):
    warned = _warnings_of(ember, fn, shape)
    assert warned == _warnings_of(torch, fn, shape)
    if isinstance(warned, str):
        return
    assert _shared_axes(ember, fn, shape) == _shared_axes(torch, fn, shape)


def test_unfold_rank_error():
    # PyTorch raises an IndexError from inside im2col here; Ember says what is wrong.
    with pytest.raises(RuntimeError, match="3D or 4D"):
        ember.nn.functional.unfold(ember.ones(2, 3), 2)


def test_dropout_modules_eval_and_zero_numel():
    for name in ("Dropout1d", "Dropout2d", "Dropout3d"):
        em, tm = getattr(ember.nn, name)(0.3), getattr(torch.nn, name)(0.3)
        assert repr(em) == repr(tm)
    x = ember.ones(3)
    with pytest.warns(UserWarning, match="Received a 1-D input to dropout2d"):
        assert ember.nn.functional.dropout2d(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match="dropout probability"):
        ember.nn.functional.dropout2d(ember.ones(2, 3, 4, 4), 1.5)
