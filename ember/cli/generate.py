"""``ember generate``: sample text from a language model trained by ``ember train``."""

from __future__ import annotations

import ember
from ember import models

__all__ = ["load_model", "main"]


def load_model(path):
    """Rebuild the model and vocabulary stored in a checkpoint."""
    state = ember.load(path)
    name = state["recipe"]["model"]
    if name not in models.MODELS or models.MODELS[name].task.dataset != "text":
        raise SystemExit(f"ember generate: {path} holds a '{name}' model, not a language model")
    model = models.build(name, **state["model_kwargs"])
    model.load_state_dict(state["model"])
    model.eval()
    return model, state["vocab"]


def main(args) -> int:
    ember.manual_seed(args.seed)
    model, vocab = load_model(args.checkpoint)
    stoi = {c: i for i, c in enumerate(vocab)}
    unknown = sorted({c for c in args.prompt if c not in stoi})
    if unknown:
        raise SystemExit(f"ember generate: the prompt has characters outside the vocabulary: {unknown}")
    idx = ember.tensor([[stoi[c] for c in args.prompt]], dtype=ember.long)
    if isinstance(model, models.LSTMLanguageModel):
        out = _generate_lstm(model, idx, args.tokens, args.temperature, args.top_k)
    else:
        out = model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k)
    print("".join(vocab[i] for i in out[0].tolist()))
    return 0


@ember.no_grad()
def _generate_lstm(model, idx, n, temperature, top_k):
    from ember.nn import functional as F

    logits = model(idx)[:, -1]
    for _ in range(n):
        logits = logits / temperature
        if top_k:
            v, _ = ember.topk(logits, min(top_k, logits.size(-1)))
            logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
        nxt = ember.multinomial(F.softmax(logits, dim=-1), 1)
        idx = ember.cat([idx, nxt], dim=1)
        logits = model(idx[:, -64:])[:, -1]
    return idx
