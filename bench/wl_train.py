"""Training-step workloads: five small models written once in the PyTorch API.

Every setup takes the framework module (``ember`` or ``torch``, imported as ``torch``) and returns
a ``step()`` that does one full training step: forward, ``cross_entropy`` loss, ``zero_grad``,
``backward``, ``optimizer.step``. Both frameworks run exactly this code with the same shapes and
hyperparameters (initial weights differ: only time and memory are compared).

``tiny=True`` shrinks every size (for the tests); the benchmark uses the full sizes:
- ``mlp``: Flatten, 784-256-128-10 with ReLU, batch 128 of 28x28 images, Adam;
- ``resnet``: CIFAR-style ResNet with BatchNorm (stem 3x3 conv 16ch, 3 stages 16/32/64 of one
  BasicBlock each), batch 32 of 1x28x28 images, SGD with momentum;
- ``gpt``: nanoGPT-style, 4 layers, 4 heads, width 128, context 64, vocab 65, batch 16, AdamW;
- ``moe-gpt``: the same GPT with a top-2-of-8 mixture of experts as MLP, routed in plain PyTorch
  API with expert capacity 1.25 (``topk``, ``cumsum``, ``scatter``, ``index_select``: static shapes);
- ``lstm``: Embedding -> 2-layer ``nn.LSTM(batch_first=True)`` hidden 256 -> Linear, sequence 64,
  batch 16, Adam.

Example:
    >>> import ember
    >>> step = mlp(ember, tiny=True)
    >>> step()
"""

from __future__ import annotations

import math

from bench.harness import workload

#: The case names of the training workloads, in report order (the geometric mean is over these).
TRAIN_NAMES = ("mlp", "resnet", "gpt", "moe-gpt", "lstm")
TRAIN_TARGET = 1.5  # every step <= 1.5x torch


def _image_batch(torch, batch: int, classes: int = 10):
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, classes, (batch,))
    return x, y


def _train_step(torch, model, opt, x, y, flat_logits: bool = False):
    """The one step shared by every workload (``flat_logits``: (B, T, V) logits vs (B, T) targets)."""
    F = torch.nn.functional

    def step():
        logits = model(x)
        if flat_logits:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        else:
            loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


# --------------------------------------------------------------------------- MLP
@workload("train", "mlp", target=TRAIN_TARGET, note="Flatten, 784-256-128-10 ReLU, batch 128, Adam")
def mlp(torch, tiny: bool = False):
    nn = torch.nn
    batch = 8 if tiny else 128
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _image_batch(torch, batch)
    return _train_step(torch, model, opt, x, y)


# --------------------------------------------------------------------------- ResNet
def _resnet(torch, widths):
    nn, F = torch.nn, torch.nn.functional

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:  # projection when the shape changes
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self, widths, classes=10):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
            )
            blocks, cin = [], widths[0]
            for i, w in enumerate(widths):
                blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2))
                cin = w
            self.stages = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            x = self.stages(self.stem(x))  # (B, 64, 7, 7)
            return self.fc(torch.flatten(self.pool(x), 1))

    return ResNet(widths)


@workload(
    "train",
    "resnet",
    target=TRAIN_TARGET,
    note="stem 16ch + BasicBlocks 16/32/64 with BatchNorm, batch 32, SGD momentum",
)
def resnet(torch, tiny: bool = False):
    model = _resnet(torch, (4, 8, 8) if tiny else (16, 32, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = _image_batch(torch, 2 if tiny else 32)
    return _train_step(torch, model, opt, x, y)


# --------------------------------------------------------------------------- GPT and MoE-GPT
def _gpt(torch, vocab, n_layer, n_head, width, context, moe=None, ckpt=False):
    """nanoGPT-style model; ``moe=(num_experts, top_k)`` swaps each MLP for a mixture of experts;
    ``ckpt`` checkpoints every block (``torch.utils.checkpoint``, non-reentrant)."""
    nn, F = torch.nn, torch.nn.functional

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.qkv(x).split(width, dim=2)
            q = q.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)
            k = k.view(B, T, n_head, C // n_head).transpose(1, 2)
            v = v.view(B, T, n_head, C // n_head).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(width, 4 * width)
            self.proj = nn.Linear(4 * width, width)

        def forward(self, x):
            return self.proj(F.gelu(self.fc(x)))

    class MoE(nn.Module):
        """Top-k routing with expert capacity (GShard, Switch): every shape is fixed by the batch,
        so a compiler captures it whole. Assignments are queued per expert in priority order
        (every token's first choice, then its second), each expert takes the first
        ``ceil(1.25 * tokens * k / experts)`` and the rest are dropped."""

        def __init__(self, num_experts, top_k):
            super().__init__()
            self.top_k = top_k
            self.router = nn.Linear(width, num_experts, bias=False)
            self.experts = nn.ModuleList([MLP() for _ in range(num_experts)])

        def forward(self, x):
            B, T, C = x.shape
            n, k, e_n = B * T, self.top_k, len(self.experts)
            flat = x.reshape(n, C)
            probs = F.softmax(self.router(flat), dim=-1)  # (N, E)
            gate, chosen = probs.topk(k, dim=-1)  # (N, k)
            cap = min(n, math.ceil(1.25 * n * k / e_n))
            expert = chosen.t().reshape(-1)  # (k*N,) assignments in priority order
            hot = (expert.unsqueeze(1) == torch.arange(e_n, device=x.device)).long()
            place = (hot.cumsum(0) * hot).sum(1) - 1  # place in its expert's queue
            dest = torch.where(place < cap, expert * cap + place, e_n * cap)  # dropped: a zero row
            token = torch.arange(n, device=x.device).repeat(k)
            table = torch.zeros(e_n * cap + 1, dtype=torch.long, device=x.device).scatter(0, dest, token)
            table = table[: e_n * cap]
            batch = flat.index_select(0, table)  # (E*cap, C): each expert's tokens, padding last
            ys = [ex(batch[i * cap : (i + 1) * cap]) for i, ex in enumerate(self.experts)]
            ys.append(flat.new_zeros(1, C))
            out = torch.cat(ys).index_select(0, dest) * gate.t().reshape(-1, 1)  # (k*N, C)
            return out.reshape(k, n, C).sum(0).view(B, T, C)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(width)
            self.attn = SelfAttention()
            self.ln2 = nn.LayerNorm(width)
            self.mlp = MoE(*moe) if moe else MLP()

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, width)
            self.pos = nn.Embedding(context, width)
            self.blocks = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(width)
            self.lm_head = nn.Linear(width, vocab, bias=False)
            self.lm_head.weight = self.tok.weight  # tied

        def forward(self, idx):
            T = idx.shape[1]
            x = self.tok(idx) + self.pos(torch.arange(T))  # (B, T, C)
            for block in self.blocks:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if ckpt else block(x)
            return self.lm_head(self.ln_f(x))  # (B, T, vocab)

    return GPT()


def _token_batch(torch, batch, context, vocab):
    x = torch.randint(0, vocab, (batch, context))
    y = torch.randint(0, vocab, (batch, context))
    return x, y


def _gpt_step(torch, tiny, moe):
    vocab = 65
    if tiny:
        layers, heads, width, context, batch = 1, 2, 16, 8, 2
    else:
        layers, heads, width, context, batch = 4, 4, 128, 64, 16
    model = _gpt(torch, vocab, layers, heads, width, context, moe)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    x, y = _token_batch(torch, batch, context, vocab)
    return _train_step(torch, model, opt, x, y, flat_logits=True)


@workload(
    "train", "gpt", target=TRAIN_TARGET, note="4 layers, 4 heads, width 128, context 64, vocab 65, batch 16, AdamW"
)
def gpt(torch, tiny: bool = False):
    return _gpt_step(torch, tiny, None)


@workload(
    "train",
    "moe-gpt",
    target=TRAIN_TARGET,
    note="the GPT with top-2 of 8 expert MLPs, capacity 1.25 (topk/cumsum/scatter/index_select)",
)
def moe_gpt(torch, tiny: bool = False):
    return _gpt_step(torch, tiny, (4, 2) if tiny else (8, 2))


# --------------------------------------------------------------------------- LSTM
@workload(
    "train", "lstm", target=TRAIN_TARGET, note="Embedding -> 2-layer LSTM hidden 256 -> Linear, seq 64, batch 16, Adam"
)
def lstm(torch, tiny: bool = False):
    nn = torch.nn
    vocab = 65
    hidden, seq, batch = (16, 6, 2) if tiny else (256, 64, 16)

    class LSTMLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, hidden)
            self.lstm = nn.LSTM(hidden, hidden, num_layers=2, batch_first=True)
            self.head = nn.Linear(hidden, vocab)

        def forward(self, idx):
            out, _ = self.lstm(self.emb(idx))  # (B, T, H)
            return self.head(out)

    model = LSTMLM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _token_batch(torch, batch, seq, vocab)
    return _train_step(torch, model, opt, x, y, flat_logits=True)


def geomean(values) -> float:
    """Geometric mean of positive numbers (the summary of the five step-time ratios)."""
    values = list(values)
    if not values:
        raise ValueError("geomean of no values")
    return math.exp(sum(math.log(v) for v in values) / len(values))
