"""Client program: pytorch/examples' GCN (``gcn/main.py``) on a sparse adjacency.

``GraphConv``/``GCN``, the preprocessing of ``load_cora`` (row-normalized features as a sparse
matrix, an int64 sparse adjacency plus ``eye`` self-loops, ``D^-1/2 A D^-1/2`` through sparse
diagonal matrices, ``to_sparse()`` of features and adjacency), ``train_iter`` and ``test`` are
the example's, written in the ordinary PyTorch API. The Cora files are replaced by a random
graph of the same kind (binary bag-of-words features, citation edges, 3 classes) built in
NumPy, and dropout is 0 so both frameworks compute the same function. Every training loss and
the per-epoch train/validation losses must agree within 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember

pytestmark = [
    pytest.mark.filterwarnings("ignore:Sparse invariant checks"),
    # Ember's 1 / 0 = inf (the example's empty-document branch) also warns from NumPy; torch is silent.
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
]

V, FEATS, HIDDEN, CLASSES, EDGES, EPOCHS = 40, 24, 16, 3, 90, 6


def _model(lib):
    nn, F = lib.nn, lib.nn.functional

    class GraphConv(nn.Module):
        def __init__(self, input_dim, output_dim, use_bias=False):
            super().__init__()
            self.kernel = nn.Parameter(lib.empty(input_dim, output_dim))
            nn.init.xavier_normal_(self.kernel)
            self.bias = None
            if use_bias:
                self.bias = nn.Parameter(lib.empty(output_dim))
                nn.init.zeros_(self.bias)

        def forward(self, input_tensor, adj_mat):
            support = lib.mm(input_tensor, self.kernel)
            output = lib.spmm(adj_mat, support)
            if self.bias is not None:
                output = output + self.bias
            return output

    class GCN(nn.Module):
        def __init__(self, input_dim, hidden_dim, output_dim, use_bias=True, dropout_p=0.1):
            super().__init__()
            self.gc1 = GraphConv(input_dim, hidden_dim, use_bias=use_bias)
            self.gc2 = GraphConv(hidden_dim, output_dim, use_bias=use_bias)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, input_tensor, adj_mat):
            x = self.gc1(input_tensor, adj_mat)
            x = F.relu(x)
            x = self.dropout(x)
            x = self.gc2(x, adj_mat)
            return F.log_softmax(x, dim=1)

    return GCN(FEATS, HIDDEN, CLASSES, use_bias=True, dropout_p=0.0)


def _load_graph(lib, content, edges):
    """``load_cora`` after the file reading: the same tensor operations."""
    features = lib.tensor(content, dtype=lib.float32)
    scale_vector = lib.sum(features, dim=1)
    scale_vector = 1 / scale_vector
    scale_vector[scale_vector == float("inf")] = 0
    scale_vector = lib.diag(scale_vector).to_sparse()
    features = scale_vector @ features
    e = edges.shape[0]
    adj_mat = lib.sparse_coo_tensor(edges.T, lib.ones(e), (V, V), dtype=lib.int64)
    adj_mat = lib.eye(V) + adj_mat
    degree_mat = lib.sum(adj_mat, dim=1)
    degree_mat = lib.sqrt(1 / degree_mat)
    degree_mat[degree_mat == float("inf")] = 0
    degree_mat = lib.diag(degree_mat).to_sparse()
    adj_mat = degree_mat @ adj_mat @ degree_mat
    return features.to_sparse().to("cpu"), adj_mat.to_sparse().to("cpu")


def _test(lib, model, criterion, input, target, mask):
    model.eval()
    with lib.no_grad():
        output = model(*input)
        output, target = output[mask], target[mask]
        loss = criterion(output, target)
        acc = (output.argmax(dim=1) == target).float().sum() / len(target)
    return loss.item(), acc.item()


def _run(lib, weights, content, edges, labels, idx):
    features, adj_mat = _load_graph(lib, content, edges)
    assert adj_mat.is_sparse and features.is_sparse
    labels = lib.tensor(labels)
    idx = lib.tensor(idx)
    idx_val, idx_train = idx[:10], idx[10:]
    gcn = _model(lib)
    gcn.load_state_dict({k: lib.tensor(v) for k, v in weights.items()})
    optimizer = lib.optim.Adam(gcn.parameters(), lr=0.01, weight_decay=5e-4)
    criterion = lib.nn.NLLLoss()
    out = []
    for _ in range(EPOCHS):  # train_iter
        gcn.train()
        optimizer.zero_grad()
        output = gcn(features, adj_mat)
        loss = criterion(output[idx_train], labels[idx_train])
        loss.backward()
        optimizer.step()
        loss_train, _ = _test(lib, gcn, criterion, (features, adj_mat), labels, idx_train)
        loss_val, _ = _test(lib, gcn, criterion, (features, adj_mat), labels, idx_val)
        out += [loss.item(), loss_train, loss_val]
    return out


def test_gcn_matches_torch():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, V)
    # Bag-of-words features that depend on the class, and citations mostly within a class.
    content = (rng.random((V, FEATS)) < 0.1 + 0.3 * (np.arange(FEATS) % CLASSES == labels[:, None])).astype(np.int32)
    content[3] = 0  # a document with no words: the example's inf -> 0 branch
    src = rng.integers(0, V, EDGES)
    same = rng.random(EDGES) < 0.8
    dst = np.where(same, [rng.choice(np.flatnonzero(labels == labels[s])) for s in src], rng.integers(0, V, EDGES))
    edges = np.stack([src, dst], 1).astype(np.int32)
    idx = rng.permutation(V)
    torch.manual_seed(0)
    weights = {k: v.detach().numpy().copy() for k, v in _model(torch).state_dict().items()}
    ours = _run(ember, weights, content, edges, labels, idx)
    theirs = _run(torch, weights, content, edges, labels, idx)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    assert theirs[-3] < theirs[0]  # the training loss goes down
