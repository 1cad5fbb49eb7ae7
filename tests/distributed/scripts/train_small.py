"""``ember train`` with small recipes (tests): ``train_small.py train --model gpt ...``.

The registry's GPT recipes train for minutes; here they shrink to a few steps of a tiny model, so
a multi-process run of each parallel mode fits in a test. Runs under ``ember run -n N`` or alone.
"""

import sys

from ember.cli import main
from ember.models.registry import MODELS

for name in ("gpt", "moe-gpt"):
    r = MODELS[name].recipe
    r.steps_per_epoch, r.eval_batches, r.block_size, r.batch_size = 4, 2, 16, 8
    r.model_kwargs.update(n_layer=2, n_head=4, n_embd=32)
    if name == "moe-gpt":
        r.model_kwargs.update(moe_num_experts=4)

# Pipelined, BatchNorm normalizes each micro-batch and dropout draws other masks: the MLP equals
# its single-process run without them.
MODELS["mlp"].recipe.model_kwargs.update(hidden=(64, 32), batch_norm=False, dropout=0.0)

sys.exit(main.main(sys.argv[1:]))
