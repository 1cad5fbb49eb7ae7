"""Tensor-parallel GPT against the unsplit GPT: loss and every gradient (run under mpiexec)."""

import numpy as np

import ember
import ember.distributed as dist
from ember.distributed import tensor_parallel as tp
from ember.models.gpt import GPT, GPTConfig

dist.init_process_group("gloo")
r, n = dist.get_rank(), dist.get_world_size()
cfg = GPTConfig(block_size=8, vocab_size=16, n_layer=2, n_head=4, n_embd=16, dropout=0.0)
ember.manual_seed(0)
full = GPT(cfg)
model = tp.TensorParallelGPT.from_gpt(full)
idx = ember.randint(0, 16, (3, 8))
tgt = ember.randint(0, 16, (3, 8))

_, ref_loss = full(idx, tgt)
ref_loss.backward()
_, loss = model(idx, tgt)
np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-5)
loss.backward()
C, k = cfg.n_embd, cfg.n_embd // n
rows = slice(r * k, (r + 1) * k)


def close(got, want, what):
    np.testing.assert_allclose(got.grad.numpy(), want, rtol=1e-4, atol=1e-6, err_msg=what)


V = cfg.vocab_size // n
close(model.wte.weight, full.transformer.wte.weight.grad.numpy()[r * V : (r + 1) * V], "tied embedding / head")
close(model.wpe.weight, full.transformer.wpe.weight.grad.numpy(), "wpe")
close(model.ln_f.weight, full.transformer.ln_f.weight.grad.numpy(), "ln_f")
for i, (b, fb) in enumerate(zip(model.h, full.transformer.h)):
    qkv = fb.attn.c_attn.weight.grad.numpy()
    close(b.attn.c_attn.weight, np.concatenate([qkv[c * C :][rows] for c in range(3)]), f"block {i} c_attn")
    close(b.attn.c_proj.weight, fb.attn.c_proj.weight.grad.numpy()[:, rows], f"block {i} attn c_proj")
    close(b.attn.c_proj.bias, fb.attn.c_proj.bias.grad.numpy(), f"block {i} attn c_proj bias")
    h4 = slice(r * 4 * k, (r + 1) * 4 * k)
    close(b.mlp.c_fc.weight, fb.mlp.c_fc.weight.grad.numpy()[h4], f"block {i} c_fc")
    close(b.mlp.c_fc.bias, fb.mlp.c_fc.bias.grad.numpy()[h4], f"block {i} c_fc bias")
    close(b.mlp.c_proj.weight, fb.mlp.c_proj.weight.grad.numpy()[:, h4], f"block {i} mlp c_proj")
    close(b.ln_1.weight, fb.ln_1.weight.grad.numpy(), f"block {i} ln_1")

# Count every collective of one block, and of the whole model, forward and backward.
NAMES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter_tensor",
    "broadcast",
    "all_to_all_single",
)
calls = []
real = {name: getattr(dist, name) for name in NAMES}


def counting(name):
    def call(*a, **k):
        calls.append(name)
        return real[name](*a, **k)

    return call


for name in NAMES:
    setattr(dist, name, counting(name))
x = ember.randn(2, 8, 16, requires_grad=True)
y = model.h[0](x)
fwd = len(calls)
y.sum().backward()
bwd = len(calls) - fwd
assert set(calls) == {"all_reduce"}, calls
assert (fwd, bwd) == (2, 2), (fwd, bwd)  # Megatron: one per attention block and one per MLP block, each way
calls.clear()
_, loss2 = model(idx, tgt)
model_fwd = len(calls)
loss2.backward()
model_bwd = len(calls) - model_fwd
# forward: embedding 1, blocks 2 each, cross-entropy 2 (max; sum of exponentials with the target
# logit); backward: blocks 2 each, the head's input 1
assert set(calls) == {"all_reduce"}, calls
assert (model_fwd, model_bwd) == (1 + 2 * cfg.n_layer + 2, 2 * cfg.n_layer + 1), (model_fwd, model_bwd)
for name in NAMES:
    setattr(dist, name, real[name])

print(
    f"rank {r}: OK tensor parallel GPT loss {loss.item():.6f} == {ref_loss.item():.6f}, grads equal, block all-reduces fwd {fwd} bwd {bwd}",
    flush=True,
)

# column / row layers on their own, with gather_output and a scattered input
ember.manual_seed(1)
lin1, lin2 = ember.nn.Linear(6, 8), ember.nn.Linear(8, 4)
x = ember.randn(5, 6)
col = tp.ColumnParallelLinear.from_linear(lin1, gather_output=True)
row = tp.RowParallelLinear.from_linear(lin2, input_is_parallel=False)
np.testing.assert_allclose(row(col(x)).detach().numpy(), lin2(lin1(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
print(f"rank {r}: OK column/row parallel linear", flush=True)
dist.destroy_process_group()
