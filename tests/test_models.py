"""The model zoo against PyTorch: each model file runs under torch too (it is written in the
PyTorch API), so the torch copy's weights load into Ember's and outputs and gradients must agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from bench.train_reference import load_model_source
from ember import models


def _load_torch_weights(e_model, t_model):
    state = {k: ember.tensor(v.detach().numpy()) for k, v in t_model.state_dict().items()}
    e_model.load_state_dict(state)


def _compare(e_out, t_out, rtol=2e-4, atol=2e-5):
    np.testing.assert_allclose(e_out.detach().numpy(), t_out.detach().numpy(), rtol=rtol, atol=atol)


def _grads_match(e_model, t_model, rtol=2e-3, atol=2e-5):
    t_grads = dict(t_model.named_parameters())
    for name, p in e_model.named_parameters():
        tp = t_grads[name]
        assert (p.grad is None) == (tp.grad is None), name
        if p.grad is not None:
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize(
    "name,kwargs",
    [("mlp", {"hidden": (32, 16)}), ("resnet", {"depth": 8, "widths": (4, 8, 8)})],
)
def test_image_models_match_torch(name, kwargs):
    cls = {"mlp": "MLP", "resnet": "ResNet"}[name]
    t_model = getattr(load_model_source(name, "torch"), cls)(**kwargs)
    e_model = getattr(models, cls)(**kwargs)
    _load_torch_weights(e_model, t_model)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    y = np.array([1, 2, 3, 4])
    for mode in ("train", "eval"):
        getattr(t_model, mode)()
        getattr(e_model, mode)()
        if name == "mlp":  # dropout draws differ between frameworks: compare without it
            t_model.eval()
            e_model.eval()
        t_out, e_out = t_model(torch.tensor(x)), e_model(ember.tensor(x))
        _compare(e_out, t_out)
    t_model.train()
    e_model.train()
    if name == "mlp":
        t_model.eval()
        e_model.eval()
    torch.nn.functional.cross_entropy(t_model(torch.tensor(x)), torch.tensor(y)).backward()
    ember.nn.functional.cross_entropy(e_model(ember.tensor(x)), ember.tensor(y)).backward()
    _grads_match(e_model, t_model)


def test_gpt_matches_torch_and_generates_with_cache():
    tm = load_model_source("gpt", "torch")
    cfg = dict(vocab_size=11, n_layer=2, n_head=2, n_embd=16, block_size=12)
    t_model = tm.GPT(tm.GPTConfig(**cfg))
    e_model = models.GPT(models.GPTConfig(**cfg))
    _load_torch_weights(e_model, t_model)
    idx = np.random.default_rng(1).integers(0, 11, (3, 10))
    t_logits, t_loss = t_model(torch.tensor(idx), torch.tensor(idx))
    e_logits, e_loss = e_model(ember.tensor(idx), ember.tensor(idx))
    _compare(e_logits, t_logits)
    t_loss.backward()
    e_loss.backward()
    _grads_match(e_model, t_model)
    assert e_model.lm_head.weight is e_model.transformer.wte.weight  # weight tying survives loading

    # Greedy decoding (top_k=1) with the key/value cache equals recomputing the full context.
    prompt = ember.tensor(idx[:1, :3])
    cached = e_model.generate(prompt, 15, top_k=1)
    seq = prompt
    for _ in range(15):
        logits, _ = e_model(seq[:, -12:])
        seq = ember.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
    # Past block_size the cache restarts from a shorter window, so compare the first block.
    assert cached[0, :12].tolist() == seq[0, :12].tolist()


def test_lstm_lm_matches_torch():
    tm = load_model_source("lstm", "torch")
    t_model = tm.LSTMLanguageModel(vocab_size=9, embed_dim=8, hidden_size=12, num_layers=2, dropout=0.0)
    e_model = models.LSTMLanguageModel(vocab_size=9, embed_dim=8, hidden_size=12, num_layers=2, dropout=0.0)
    _load_torch_weights(e_model, t_model)
    idx = np.random.default_rng(2).integers(0, 9, (2, 7))
    t_out, e_out = t_model(torch.tensor(idx)), e_model(ember.tensor(idx))
    _compare(e_out, t_out)
    t_out.square().sum().backward()
    e_out.square().sum().backward()
    _grads_match(e_model, t_model)


def test_moe_gpt_trains_and_reports_expert_load():
    cfg = models.GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=16, block_size=8, moe_num_experts=4)
    model = models.MoEGPT(cfg)
    idx = ember.randint(0, 11, (4, 8))
    logits, loss = model(idx, idx)
    loss.backward()
    share = model.expert_load()[0]
    assert len(share) == 4 and abs(sum(share) - 1) < 1e-9
    router = model.transformer.h[0].mlp.router.weight
    assert router.grad is not None and float(router.grad.abs().sum()) > 0


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model"):
        models.build("transformer-xl")
