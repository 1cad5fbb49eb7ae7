"""ember.onnx.export: every model in ember.models and nn.TransformerEncoderLayer, run by onnxruntime.

Each model is exported with a dynamic batch axis and run at the exported batch size and at another
one; outputs must be within 1e-4 of Ember's.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.onnx
from ember.models import GPT, MLP, GPTConfig, LSTMLanguageModel, MoEGPT, ResNet

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

_GPT = dict(block_size=16, vocab_size=32, n_layer=2, n_head=2, n_embd=32)


def _mlp():
    return MLP(in_features=20, hidden=(16, 12), batch_norm=True), lambda b: ember.randn(b, 20)


def _resnet():
    return ResNet(depth=8, widths=(4, 8, 16)), lambda b: ember.randn(b, 1, 28, 28)


def _lstm():
    return LSTMLanguageModel(vocab_size=32, embed_dim=16, hidden_size=16), lambda b: ember.randint(0, 32, (b, 7))


def _gpt():
    return GPT(GPTConfig(**_GPT)), lambda b: ember.randint(0, 32, (b, 7))


def _moe_gpt():
    return MoEGPT(GPTConfig(**_GPT, moe_num_experts=4)), lambda b: ember.randint(0, 32, (b, 7))


def _encoder_layer():
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
    return layer, lambda b: ember.randn(b, 5, 16)


def _export(model, x, **kw) -> bytes:
    f = io.BytesIO()
    ember.onnx.export(
        model,
        (x,),
        f,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        **kw,
    )
    return f.getvalue()


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize(
    "make", [_mlp, _resnet, _lstm, _gpt, _moe_gpt, _encoder_layer], ids=lambda f: f.__name__.strip("_")
)
def test_export_matches_ember_with_dynamic_batch(make):
    model, data = make()
    model.eval()
    proto = _export(model, data(3))
    onnx.checker.check_model(onnx.load_from_string(proto))
    sess = ort.InferenceSession(proto, providers=["CPUExecutionProvider"])
    for batch in (3, 5):  # 5: a batch size the model was not exported with
        x = data(batch)
        with ember.no_grad():
            want = _first(model(x)).numpy()
        (got,) = sess.run(None, {"x": x.numpy()})
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_moe_capacity_drops_follow_the_batch():
    # A small capacity factor drops assignments; the exported graph computes capacity from the
    # token count, so the drops match Ember at a batch size other than the exported one too.
    model = MoEGPT(GPTConfig(**_GPT, moe_num_experts=4, moe_capacity_factor=0.5)).eval()
    sess = ort.InferenceSession(_export(model, ember.randint(0, 32, (2, 7))))
    for batch in (2, 6):
        x = ember.randint(0, 32, (batch, 7))
        with ember.no_grad():
            want = _first(model(x)).numpy()
        assert sum(m.dropped_tokens for m in model.moe_layers()) > 0
        (got,) = sess.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_export_to_path_and_names(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    path = tmp_path / "m.onnx"
    ember.onnx.export(model, (ember.randn(2, 4),), str(path), input_names=["inp"], output_names=["out"])
    m = onnx.load(str(path))
    assert [i.name for i in m.graph.input] == ["inp"]
    assert [o.name for o in m.graph.output] == ["out"]
    # Parameters are initializers named as the module names them, with their values.
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    assert {"0.weight", "0.bias", "2.weight", "2.bias"} <= set(inits)
    np.testing.assert_array_equal(inits["2.weight"], model[2].weight.detach().numpy())
    # A static export keeps the batch size in the declared shape.
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 4]
    x = ember.randn(2, 4)
    (got,) = ort.InferenceSession(str(path)).run(None, {"inp": x.numpy()})
    with ember.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)


def test_dynamic_axis_is_symbolic_in_the_model():
    model, data = _gpt()
    m = onnx.load_from_string(_export(model.eval(), data(2)))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert m.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_unsupported_op_names_the_op():
    class Distances(nn.Module):
        def forward(self, x):
            return ember.cdist(x, x)

    with pytest.raises(ember.onnx.UnsupportedOperatorError, match="operator 'cdist'"):
        ember.onnx.export(Distances(), (ember.randn(3, 2),), io.BytesIO())


def test_exports_in_eval_mode_and_restores_the_mode():
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.BatchNorm1d(3))
    model.train()
    f = io.BytesIO()
    ember.onnx.export(model, (ember.randn(8, 4),), f, input_names=["x"])
    assert model.training
    x = ember.randn(8, 4)
    (got,) = ort.InferenceSession(f.getvalue()).run(None, {"x": x.numpy()})
    model.eval()
    with ember.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)


def test_dynamic_axes_as_a_list_and_unknown_names():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Flatten(0))
    f = io.BytesIO()
    ember.onnx.export(model, (ember.randn(2, 4),), f, input_names=["x"], dynamic_axes={"x": [0]})
    m = onnx.load_from_string(f.getvalue())
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "x_dynamic_axes_1"
    x = ember.randn(7, 4)
    (got,) = ort.InferenceSession(f.getvalue()).run(None, {"x": x.numpy()})
    with ember.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5)  # the flatten follows the batch
    with pytest.raises(ValueError, match="'z'"):
        ember.onnx.export(model, (ember.randn(2, 4),), io.BytesIO(), input_names=["x"], dynamic_axes={"z": {0: "b"}})


def test_sorting_ops_keep_ember_order():
    class Sorts(nn.Module):
        def forward(self, x):
            vals, idx = x.topk(2, dim=-1)
            return vals, idx, x.argsort(dim=0, descending=True), x.sort(dim=-1).values

    x = ember.tensor([[1.0, 3.0, 3.0, 0.5], [2.0, -1.0, 2.0, 7.0], [0.0, 0.0, 1.0, 1.0]])
    f = io.BytesIO()
    ember.onnx.export(Sorts(), (x,), f, input_names=["x"])
    got = ort.InferenceSession(f.getvalue()).run(None, {"x": x.numpy()})
    with ember.no_grad():
        want = Sorts()(x)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w.numpy())  # ties: the lower index first, as in Ember


def test_a_model_on_meta_has_no_values_to_export():
    with ember.device("meta"):
        model = nn.Linear(4, 2)
    with pytest.raises(RuntimeError, match="meta device"):
        ember.onnx.export(model, (ember.randn(2, 4),), io.BytesIO())


def test_unsupported_options_raise():
    with pytest.raises(NotImplementedError, match="export_params=False"):
        ember.onnx.export(nn.Linear(4, 2), (ember.randn(2, 4),), io.BytesIO(), export_params=False)
    with pytest.raises(TypeError):
        ember.onnx.export(nn.Linear(4, 2), (ember.randn(2, 4),), io.BytesIO(), no_such_option=1)


def test_encoder_layer_matches_torch():
    # PyTorch as the oracle: the exported layer, run by onnxruntime, against torch's layer with
    # the same weights (PyTorch's own exporter fails on this layer here: its sdpa fast path).
    torch = pytest.importorskip("torch")
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True).eval()
    ref = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=True).eval()
    ref.load_state_dict({k: torch.from_numpy(v.detach().numpy().copy()) for k, v in layer.state_dict().items()})
    sess = ort.InferenceSession(_export(layer, ember.randn(2, 6, 16)))
    x = np.random.randn(3, 6, 16).astype(np.float32)
    (got,) = sess.run(None, {"x": x})
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
