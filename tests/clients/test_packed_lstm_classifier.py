"""Client program: a sequence classifier over variable-length token sequences, with a bidirectional
LSTM on packed input (the pytorch/examples pattern: pad_sequence -> pack_padded_sequence ->
LSTM -> final hidden states -> Linear), trained a few Adam steps on Ember and on PyTorch from the
same weights and batches; the losses agree within 1e-4 relative."""

from __future__ import annotations

import numpy as np
import torch

import ember

from ._api_core_helpers import assert_losses_close, copy_weights

VOCAB, EMB, HIDDEN, CLASSES, STEPS = 20, 8, 16, 3, 6


def build(lib):
    nn = lib.nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, EMB, padding_idx=0)
            self.lstm = nn.LSTM(EMB, HIDDEN, num_layers=2, batch_first=True, bidirectional=True)
            self.head = nn.Linear(2 * HIDDEN, CLASSES)

        def forward(self, tokens, lengths):
            x = self.embed(tokens)  # (B, T, EMB)
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, (h, _) = self.lstm(packed)
            # Mean of the outputs over each sequence's true length, plus the last layer's final states.
            padded, lens = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
            mean_out = padded.sum(1) / lens.unsqueeze(1).to(padded.dtype)
            return self.head(lib.cat([h[-2], h[-1]], dim=1) + mean_out)

    return Classifier()


def batches(seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(STEPS):
        lengths = rng.integers(1, 9, size=6)
        seqs = [rng.integers(1, VOCAB, size=n) for n in lengths]
        labels = np.array([s.sum() % CLASSES for s in seqs])
        yield seqs, lengths, labels


def train(lib, model):
    lib.manual_seed(0)
    opt = lib.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for seqs, lengths, labels in batches():
        tokens = lib.nn.utils.rnn.pad_sequence([lib.tensor(s) for s in seqs], batch_first=True)
        logits = model(tokens, lib.tensor(lengths))
        loss = lib.nn.functional.cross_entropy(logits, lib.tensor(labels))
        opt.zero_grad()
        loss.backward()
        model.lstm.flatten_parameters()
        opt.step()
        losses.append(loss.item())
    return losses


def test_packed_lstm_classifier_matches_torch():
    torch.manual_seed(0)
    tm = build(torch)
    em = build(ember)
    copy_weights(tm, em)
    torch_losses = train(torch, tm)
    ember_losses = train(ember, em)
    assert_losses_close(ember_losses, torch_losses)
    assert ember_losses[-1] < ember_losses[0]  # it learns
