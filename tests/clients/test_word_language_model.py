"""Client program: pytorch/examples' word_language_model with ``--model Transformer``.

``TransformerModel`` subclasses ``nn.Transformer`` at class-definition time and replaces its
``decoder`` with a ``Linear``, exactly as ``word_language_model/model.py`` does; the positional
encoding, ``batchify``/``get_batch``, the causal mask ``log(tril(ones))``, the NLL loss, gradient
clipping and the manual SGD update (``p.data.add_(p.grad, alpha=-lr)``) are the example's
``main.py``. Sizes are shrunk, the corpus is random token ids, and dropout is 0 (passed on to
``nn.Transformer`` so its layers use it too) so both frameworks compute the same function.
The training losses and the final evaluation loss must agree within 1e-4 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ember

NTOKEN, NINP, NHEAD, NHID, NLAYERS = 40, 16, 2, 32, 2
BPTT, BATCH, LR, CLIP = 6, 4, 1.0, 0.25

pytestmark = [
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True"),
    pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning"),
]


def _model(lib):
    nn, F = lib.nn, lib.nn.functional

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout=0.1, max_len=5000):
            super().__init__()
            self.dropout = nn.Dropout(p=dropout)
            pe = lib.zeros(max_len, d_model)
            position = lib.arange(0, max_len, dtype=lib.float).unsqueeze(1)
            div_term = lib.exp(lib.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
            pe[:, 0::2] = lib.sin(position * div_term)
            pe[:, 1::2] = lib.cos(position * div_term)
            pe = pe.unsqueeze(0).transpose(0, 1)
            self.register_buffer("pe", pe)

        def forward(self, x):
            x = x + self.pe[: x.size(0), :]
            return self.dropout(x)

    class TransformerModel(nn.Transformer):
        """Container module with an encoder, a recurrent or transformer module, and a decoder."""

        def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
            super().__init__(
                d_model=ninp, nhead=nhead, dim_feedforward=nhid, num_encoder_layers=nlayers, dropout=dropout
            )
            self.model_type = "Transformer"
            self.src_mask = None
            self.pos_encoder = PositionalEncoding(ninp, dropout)
            self.input_emb = nn.Embedding(ntoken, ninp)
            self.ninp = ninp
            self.decoder = nn.Linear(ninp, ntoken)
            self.init_weights()

        def _generate_square_subsequent_mask(self, sz):
            return lib.log(lib.tril(lib.ones(sz, sz)))

        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.input_emb.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

        def forward(self, src, has_mask=True):
            if has_mask:
                device = src.device
                if self.src_mask is None or self.src_mask.size(0) != len(src):
                    mask = self._generate_square_subsequent_mask(len(src)).to(device)
                    self.src_mask = mask
            else:
                self.src_mask = None
            src = self.input_emb(src) * math.sqrt(self.ninp)
            src = self.pos_encoder(src)
            output = self.encoder(src, mask=self.src_mask)
            output = self.decoder(output)
            return F.log_softmax(output, dim=-1)

    return TransformerModel(NTOKEN, NINP, NHEAD, NHID, NLAYERS, dropout=0.0)


def _batchify(lib, data, bsz):
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    return data.view(bsz, -1).t().contiguous()


def _get_batch(source, i):
    seq_len = min(BPTT, len(source) - 1 - i)
    data = source[i : i + seq_len]
    target = source[i + 1 : i + 1 + seq_len].view(-1)
    return data, target


def _run(lib, weights, train_ids, val_ids):
    model = _model(lib)
    model.load_state_dict({k: lib.tensor(v) for k, v in weights.items()})
    criterion = lib.nn.NLLLoss()
    train_data = _batchify(lib, lib.tensor(train_ids), BATCH)
    val_data = _batchify(lib, lib.tensor(val_ids), BATCH)
    losses = []
    model.train()
    for i in range(0, train_data.size(0) - 1, BPTT):
        data, targets = _get_batch(train_data, i)
        model.zero_grad()
        output = model(data)
        output = output.view(-1, NTOKEN)
        loss = criterion(output, targets)
        loss.backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-LR)
        losses.append(loss.item())
    model.eval()
    total_loss = 0.0
    with lib.no_grad():
        for i in range(0, val_data.size(0) - 1, BPTT):
            data, targets = _get_batch(val_data, i)
            output = model(data).view(-1, NTOKEN)
            total_loss += len(data) * criterion(output, targets).item()
    losses.append(total_loss / (len(val_data) - 1))
    return losses


def test_word_language_model_transformer_matches_torch():
    torch.manual_seed(0)
    weights = {k: v.detach().numpy().copy() for k, v in _model(torch).state_dict().items()}
    rng = np.random.default_rng(0)
    # A corpus with structure to learn: token t is mostly followed by t + 1.
    walk = np.cumsum(rng.random(4 * BATCH * BPTT + 1) < 0.8) % NTOKEN
    train_ids = walk[: 3 * BATCH * BPTT + 1].astype(np.int64)
    val_ids = walk[3 * BATCH * BPTT :].astype(np.int64)
    ours = _run(ember, weights, train_ids, val_ids)
    theirs = _run(torch, weights, train_ids, val_ids)
    assert len(ours) == len(theirs) >= 4
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
