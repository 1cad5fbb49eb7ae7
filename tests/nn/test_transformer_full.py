"""nn.Transformer, TransformerDecoder(Layer) and TransformerEncoder options against PyTorch.

Each case builds the same module in both libraries, copies torch's weights into Ember through
NumPy, runs the same inputs and masks, and compares outputs and every parameter's gradient.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close

RNG = np.random.default_rng(0)
D, H = 8, 2


def _copy(em, tm):
    em.load_state_dict({k: ember.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})


def _pair(a):
    return ember.tensor(a), torch.tensor(a)


def _compare(em, tm, e_args, t_args, e_kw=None, t_kw=None, atol=1e-5):
    e_kw, t_kw = e_kw or {}, t_kw or {}
    eo, to = em(*e_args, **e_kw), tm(*t_args, **t_kw)
    assert_close(eo, to, atol=atol, rtol=1e-4)
    g = RNG.standard_normal(tuple(to.shape)).astype(np.float32)
    eo.backward(ember.tensor(g))
    to.backward(torch.tensor(g))
    tp = dict(tm.named_parameters())
    for name, p in em.named_parameters():
        assert_close(p.grad, tp[name].grad, atol=atol, rtol=1e-3, what=f"grad {name}")


def _masks(kind, s, n):
    """(ember, torch) pairs: attention mask (s, s), key padding mask (n, s)."""
    if kind == "none":
        return (None, None), (None, None)
    if kind == "causal":
        m = np.triu(np.full((s, s), -np.inf, np.float32), 1)
        return _pair(m), (None, None)
    if kind == "bool":
        m = np.triu(np.ones((s, s), bool), 1)
        kpm = np.zeros((n, s), bool)
        kpm[0, -2:] = True
        return _pair(m), _pair(kpm)
    if kind == "float_kpm":
        kpm = np.zeros((n, s), np.float32)
        kpm[1, -1] = -np.inf
        return (None, None), _pair(kpm)
    raise ValueError(kind)


OPTIONS = [
    {},
    {"batch_first": True},
    {"norm_first": True},
    {"activation": "gelu", "bias": False},
    {"layer_norm_eps": 1e-3, "dim_feedforward": 12},
]


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("masks", ["none", "causal", "bool"])
def test_decoder_layer_matches_torch(opts, masks):
    tm = torch.nn.TransformerDecoderLayer(D, H, dropout=0.0, **opts)
    em = ember.nn.TransformerDecoderLayer(D, H, dropout=0.0, **opts)
    _copy(em, tm)
    n, t, s = 3, 5, 4
    bf = opts.get("batch_first", False)
    tgt = RNG.standard_normal((n, t, D) if bf else (t, n, D)).astype(np.float32)
    mem = RNG.standard_normal((n, s, D) if bf else (s, n, D)).astype(np.float32)
    (em_mask, tm_mask), (e_kpm, t_kpm) = _masks(masks, t, n)
    (e_tgt, t_tgt), (e_mem, t_mem) = _pair(tgt), _pair(mem)
    _compare(
        em,
        tm,
        (e_tgt, e_mem),
        (t_tgt, t_mem),
        {"tgt_mask": em_mask, "tgt_key_padding_mask": e_kpm},
        {"tgt_mask": tm_mask, "tgt_key_padding_mask": t_kpm},
    )


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask")
def test_decoder_layer_callable_activation_and_memory_masks():
    act = torch.nn.functional.silu
    tm = torch.nn.TransformerDecoderLayer(D, H, 16, 0.0, act)
    em = ember.nn.TransformerDecoderLayer(D, H, 16, 0.0, ember.nn.functional.silu)
    _copy(em, tm)
    tgt, mem = RNG.standard_normal((5, 2, D)).astype(np.float32), RNG.standard_normal((4, 2, D)).astype(np.float32)
    mm = RNG.standard_normal((5, 4)).astype(np.float32)
    mkpm = np.array([[False, False, False, True], [False, True, False, False]])
    e, t = [_pair(a) for a in (tgt, mem, mm, mkpm)], None
    t = [p[1] for p in e]
    e = [p[0] for p in e]
    _compare(
        em,
        tm,
        (e[0], e[1]),
        (t[0], t[1]),
        {"memory_mask": e[2], "memory_key_padding_mask": e[3]},
        {"memory_mask": t[2], "memory_key_padding_mask": t[3]},
    )


@pytest.mark.parametrize("opts", OPTIONS[:4])
def test_transformer_matches_torch(opts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tm = torch.nn.Transformer(D, H, 2, 2, 16, 0.0, **opts)
        em = ember.nn.Transformer(D, H, 2, 2, 16, 0.0, **opts)
    assert [k for k, _ in em.named_parameters()] == [k for k, _ in tm.named_parameters()]
    assert repr(em) == repr(tm)
    _copy(em, tm)
    bf = opts.get("batch_first", False)
    src = RNG.standard_normal((2, 6, D) if bf else (6, 2, D)).astype(np.float32)
    tgt = RNG.standard_normal((2, 5, D) if bf else (5, 2, D)).astype(np.float32)
    em_mask = ember.nn.Transformer.generate_square_subsequent_mask(5)
    tm_mask = torch.nn.Transformer.generate_square_subsequent_mask(5)
    assert_close(em_mask, tm_mask)
    kpm = np.zeros((2, 6), bool)
    kpm[1, -2:] = True
    (e_src, t_src), (e_tgt, t_tgt), (e_kpm, t_kpm) = _pair(src), _pair(tgt), _pair(kpm)
    _compare(
        em,
        tm,
        (e_src, e_tgt),
        (t_src, t_tgt),
        {"tgt_mask": em_mask, "src_key_padding_mask": e_kpm, "memory_key_padding_mask": e_kpm},
        {"tgt_mask": tm_mask, "src_key_padding_mask": t_kpm, "memory_key_padding_mask": t_kpm},
    )


def test_transformer_init_is_xavier_and_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        em = ember.nn.Transformer(16, 4, 1, 1, 32, 0.0)
    w = em.encoder.layers[0].linear1.weight.detach().numpy()
    bound = np.sqrt(6.0 / (16 + 32))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert em.encoder.layers[0].linear1.bias is not None
    with pytest.raises(RuntimeError, match="batch number of src and tgt"):
        em(ember.randn(5, 2, 16), ember.randn(5, 3, 16))
    with pytest.raises(RuntimeError, match="feature number"):
        em(ember.randn(5, 2, 16), ember.randn(5, 2, 8))


def test_subclass_at_class_definition_time():
    # pytorch/examples word_language_model: TransformerModel(nn.Transformer) replaces `decoder`.
    class TransformerModel(ember.nn.Transformer):
        def __init__(self, ntoken, ninp, nhead, nhid, nlayers):
            super().__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid, num_encoder_layers=nlayers)
            self.input_emb = ember.nn.Embedding(ntoken, ninp)
            self.decoder = ember.nn.Linear(ninp, ntoken)

        def forward(self, src):
            mask = ember.nn.Transformer.generate_square_subsequent_mask(len(src))
            return self.decoder(self.encoder(self.input_emb(src), mask=mask))

    with pytest.warns(UserWarning, match="enable_nested_tensor is True"):
        model = TransformerModel(11, 8, 2, 16, 2)
    assert model(ember.tensor(np.zeros((5, 3), np.int64))).shape == (5, 3, 11)
    assert isinstance(model.decoder, ember.nn.Linear)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_encoder_nested_tensor_warning_and_padding_zeros():
    layer_t = torch.nn.TransformerEncoderLayer(D, H, 16, 0.0, batch_first=True)
    layer_e = ember.nn.TransformerEncoderLayer(D, H, 16, 0.0, batch_first=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm = torch.nn.TransformerEncoder(layer_t, 2, torch.nn.LayerNorm(D))
        em = ember.nn.TransformerEncoder(layer_e, 2, ember.nn.LayerNorm(D))
    _copy(em, tm)
    tm.eval()
    em.eval()
    x = RNG.standard_normal((2, 5, D)).astype(np.float32)
    kpm = np.zeros((2, 5), bool)
    kpm[0, 3:] = True
    with torch.no_grad(), ember.no_grad():
        to = tm(torch.tensor(x), src_key_padding_mask=torch.tensor(kpm))
        eo = em(ember.tensor(x), src_key_padding_mask=ember.tensor(kpm))
    assert_close(eo, to, atol=1e-5)
    # Not left-aligned: no nested tensors, the padded positions are computed in both.
    kpm2 = np.zeros((2, 5), bool)
    kpm2[0, 0] = True
    with torch.no_grad(), ember.no_grad():
        to = tm(torch.tensor(x), src_key_padding_mask=torch.tensor(kpm2))
        eo = em(ember.tensor(x), src_key_padding_mask=ember.tensor(kpm2))
    assert_close(eo, to, atol=1e-5)
    for reason, kw in [("norm_first was True", {"norm_first": True}), ("batch_first was not True", {})]:
        with pytest.warns(UserWarning, match=reason):
            ember.nn.TransformerEncoder(ember.nn.TransformerEncoderLayer(D, H, **kw), 1)
        enc = ember.nn.TransformerEncoder(ember.nn.TransformerEncoderLayer(D, H, **kw), 1, enable_nested_tensor=False)
        assert enc.use_nested_tensor is False


def test_mismatched_mask_types_warn_and_bad_dtype_raises():
    enc = ember.nn.TransformerEncoder(ember.nn.TransformerEncoderLayer(D, H, 16, 0.0), 1, enable_nested_tensor=False)
    x = ember.randn(4, 2, D)
    with pytest.warns(UserWarning, match="mismatched src_key_padding_mask and mask"):
        enc(x, mask=ember.zeros(4, 4), src_key_padding_mask=ember.zeros(2, 4, dtype=ember.bool))
    with pytest.raises(AssertionError, match="only bool and floating types of mask"):
        enc(x, mask=ember.zeros(4, 4, dtype=ember.int64))


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")  # ember.log(0): NumPy warns
def test_encoder_is_causal_detection_matches_torch():
    from ember.nn.modules._transformer_masks import detect_is_causal

    causal = ember.nn.Transformer.generate_square_subsequent_mask(4)
    assert detect_is_causal(causal, None, 4) is True
    assert detect_is_causal(ember.log(ember.tril(ember.ones(4, 4))), None, 4) is True
    assert detect_is_causal(ember.zeros(4, 4), None, 4) is False
    assert detect_is_causal(ember.zeros(4, 4), True, 4) is True
    assert detect_is_causal(None, None, 4) is False


def test_unbatched_decoder_and_custom_encoder_decoder():
    tm = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(D, H, 16, 0.0), 2, torch.nn.LayerNorm(D))
    em = ember.nn.TransformerDecoder(ember.nn.TransformerDecoderLayer(D, H, 16, 0.0), 2, ember.nn.LayerNorm(D))
    _copy(em, tm)
    tgt, mem = RNG.standard_normal((5, D)).astype(np.float32), RNG.standard_normal((3, D)).astype(np.float32)
    causal_e = ember.nn.Transformer.generate_square_subsequent_mask(5)
    causal_t = torch.nn.Transformer.generate_square_subsequent_mask(5)
    (e_tgt, t_tgt), (e_mem, t_mem) = _pair(tgt), _pair(mem)
    _compare(em, tm, (e_tgt, e_mem), (t_tgt, t_mem), {"tgt_mask": causal_e}, {"tgt_mask": causal_t})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = ember.nn.TransformerEncoder(ember.nn.TransformerEncoderLayer(D, H, 16, 0.0), 1)
    dec = ember.nn.TransformerDecoder(ember.nn.TransformerDecoderLayer(D, H, 16, 0.0), 1)
    model = ember.nn.Transformer(D, H, custom_encoder=enc, custom_decoder=dec)
    assert model.encoder is enc and model.decoder is dec
    assert model(ember.randn(4, 2, D), ember.randn(3, 2, D)).shape == (3, 2, D)


def test_generate_square_subsequent_mask_dtype_and_staticmethod():
    m = ember.nn.Transformer.generate_square_subsequent_mask(3, dtype=ember.float64)
    t = torch.nn.Transformer.generate_square_subsequent_mask(3, dtype=torch.float64)
    assert_close(m, t)
    assert isinstance(ember.nn.Transformer.__dict__["generate_square_subsequent_mask"], staticmethod)
