"""``ember train --parallel tp|pp|ep``: the main job with the model itself split over the ranks.

Every rank builds the unsplit model with the same seed, then keeps its share of it:

- ``tp`` (gpt): :class:`~ember.distributed.tensor_parallel.TensorParallelGPT`, heads and MLP
  units split, the tied embedding / head split by vocabulary. Every rank sees the whole batch.
- ``pp`` (gpt, mlp): :func:`~ember.distributed.pipeline_models.split_model` stages (GPT:
  embedding / blocks / final norm + head), one per rank, trained with the 1F1B schedule over
  ``micro_batches`` micro-batches; the tied embedding / head gradient is all-reduced between the
  first and the last stage. The last stage computes the loss; it is broadcast to every rank.
  The steps equal one process's on the whole batch where no layer looks across the batch:
  BatchNorm normalizes each micro-batch (as in GPipe) and dropout draws other masks.
- ``ep`` (moe-gpt): every MoE layer an
  :class:`~ember.distributed.expert_parallel.ExpertParallelMoE` with ``E/n`` experts per rank;
  each rank takes its share of every batch (as ``dp``), the replicated parameters' gradients
  are averaged over the ranks, and each expert's gradient, which already sums the contributions
  of every rank's tokens, is divided by n. So ``ep`` takes the same steps as ``dp``.

A :class:`~ember.distributed.sharded_state.ShardPlan` maps the unsplit model's tensors to the
shards: before each evaluation and checkpoint the unsplit model is gathered on every rank, so the
evaluation is a single-process one, and rank 0 writes a checkpoint (weights and optimizer state
of the unsplit model) that loads into one process, or resumes on ranks of any of these modes.

Example:
    $ ember train --model gpt --epochs 1 --nproc 2 --parallel tp
"""

from __future__ import annotations

import re

import numpy as np

import ember
import ember.distributed as dist
from ember.distributed.sharded_state import Owned, Replicated, ShardPlan, Split

__all__ = ["SHARDED_MODES", "ShardedRun", "TensorParallelRun", "PipelineRun", "ExpertParallelRun", "make_run"]

SHARDED_MODES = {"tp": ("gpt",), "pp": ("gpt", "mlp"), "ep": ("moe-gpt",)}


class ShardedRun:
    """What :class:`~ember.cli.trainer.Trainer` calls for a run whose model is split over the ranks."""

    shard_train_data = False  # each rank takes its share of every batch (else: the whole batch)

    def __init__(self, recipe):
        self.recipe = recipe
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.plan: ShardPlan | None = None
        self._fresh = False  # the unsplit model holds the current weights

    def shard(self, module):
        """This rank's model, cut from ``module`` (the unsplit one); sets ``self.plan``."""
        raise NotImplementedError

    def train_step(self, task, model, optimizer, x, y):
        """One optimizer step: ``(loss value of the batch, number correct or None)``."""
        self._fresh = False
        loss, right = task.loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.sync_gradients(model)
        optimizer.step()
        return loss.item(), right

    def sync_gradients(self, model) -> None:
        """Combine gradients across the ranks between backward and the optimizer step."""

    def gather_weights(self, module) -> None:
        """The unsplit model's weights into ``module`` on every rank (every rank calls it)."""
        if not self._fresh:
            self.plan.gather_model(module)
            self._fresh = True

    def _full_optimizer(self, module):
        from ember.cli.trainer import build_optimizer

        return build_optimizer(module, self.recipe)

    def optimizer_state(self, module, optimizer) -> dict | None:
        """On rank 0: the unsplit model's optimizer state_dict; None elsewhere."""
        return self.plan.gather_optimizer_state(optimizer, module, self._full_optimizer(module), dst=0)

    def load_optimizer_state(self, full_state: dict, module, optimizer) -> None:
        """Resume: this rank's share of a checkpoint's (unsplit) optimizer state."""
        optimizer.load_state_dict(
            self.plan.cut_optimizer_state(full_state, module, self._full_optimizer(module), optimizer)
        )


def _check_model(module, kind, what: str):
    if not isinstance(module, kind) or (what != "moe-gpt" and hasattr(module, "moe_layers")):
        raise ValueError(f"--parallel: this mode splits a {what} model, not {type(module).__name__}")


class TensorParallelRun(ShardedRun):
    """Megatron-style tensor parallelism of a GPT over all ranks."""

    _SPLIT = [
        (r"\.attn\.c_attn\.(weight|bias)$", Split(0, chunks=3)),
        (r"\.mlp\.c_fc\.(weight|bias)$", Split(0)),
        (r"\.c_proj\.weight$", Split(1)),
    ]

    def shard(self, module):
        from ember.distributed.tensor_parallel import TensorParallelGPT
        from ember.models.gpt import GPT

        _check_model(module, GPT, "gpt")
        if module.config.dropout:
            raise ValueError("--parallel tp: the tensor-parallel GPT runs without dropout (set dropout=0)")
        model = TensorParallelGPT.from_gpt(module)
        self.plan = ShardPlan()
        for name, p in model.named_parameters():
            layout = next((lay for pat, lay in self._SPLIT if re.search(pat, name)), Replicated())
            if name == "wte.weight":  # vocabulary-parallel, padded to a multiple of the ranks
                layout = Split(0, size=model.wte.vocab_size)
            self.plan.add("transformer." + name, p, layout)
        return model


class PipelineRun(ShardedRun):
    """One pipeline stage per rank, 1F1B over ``micro_batches`` micro-batches."""

    def __init__(self, recipe, micro_batches: int = 4):
        super().__init__(recipe)
        self.micro_batches = micro_batches

    def shard(self, module):
        from ember.distributed.pipeline import PipelineStage, Schedule1F1B
        from ember.distributed.pipeline_models import split_model, tied_parameters

        stages = split_model(module, self.world)
        owner: dict[int, int] = {}
        for i, stage in enumerate(stages):
            for t in (*stage.parameters(), *stage.buffers()):
                owner.setdefault(id(t), i)
        self.plan = ShardPlan()
        here = {id(t) for t in (*stages[self.rank].parameters(), *stages[self.rank].buffers())}
        for name, t in (*module.named_parameters(), *module.named_buffers()):
            if id(t) not in owner:
                raise ValueError(f"--parallel pp: '{name}' is in no pipeline stage")
            # The first stage holding a tensor leads it; a tied weight's other copy follows it.
            self.plan.add(name, t if id(t) in here else None, Owned(owner[id(t)]))
        # Ties across stages (GPT's embedding and head): one group per tie, made on every rank.
        self.ties = []
        for p, holders in tied_parameters(stages):
            group = dist.new_group(list(holders))
            if self.rank in holders:
                self.ties.append((p, group))
        self.stage = PipelineStage(stages[self.rank], self.rank, self.world)
        self.schedule = Schedule1F1B(self.stage, self.micro_batches, loss_fn=self._loss)
        return stages[self.rank]

    def _loss(self, out, target):
        from ember.nn import functional as F

        if out.dim() == 3:  # a language model: (B, T, V) logits, (B, T) next tokens
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
        self._right += int((out.argmax(1) == target).sum().item())
        return F.cross_entropy(out, target)

    def train_step(self, task, model, optimizer, x, y):
        self._fresh = False
        if len(y) % self.micro_batches:
            raise ValueError(f"--parallel pp: batch of {len(y)} cannot be cut into {self.micro_batches} micro-batches")
        optimizer.zero_grad(set_to_none=True)
        self._right = 0
        loss = self.schedule.step(x if self.stage.is_first else None, target=y if self.stage.is_last else None)
        for p, group in self.ties:
            dist.all_reduce(p.grad, group=group)
        optimizer.step()
        figures = ember.tensor(
            np.array([loss.item(), self._right] if self.stage.is_last else [0.0, 0.0], dtype=np.float64)
        )
        dist.broadcast(figures, src=self.world - 1)
        lv, right = figures.tolist()
        return lv, (int(right) if task.reports_accuracy else None)


class ExpertParallelRun(ShardedRun):
    """MoE-GPT with each MoE layer's experts spread over the ranks (data split as ``dp``)."""

    shard_train_data = True
    _EXPERT = re.compile(r"^(.*\.experts\.experts\.)(\d+)(\..*)$")

    def shard(self, module):
        import copy

        from ember.distributed.expert_parallel import ExpertParallelMoE
        from ember.models.moe_gpt import MoEGPT

        _check_model(module, MoEGPT, "moe-gpt")
        model = copy.deepcopy(module)
        for block in model.transformer.h:
            block.mlp = ExpertParallelMoE.from_moe(block.mlp)
        per_rank = module.config.moe_num_experts // self.world
        local = dict(model.named_parameters())
        self.plan, self.experts, self.replicated = ShardPlan(), [], []
        for name, _ in module.named_parameters():
            m = self._EXPERT.match(name)
            if m is None:
                self.plan.add(name, local[name], Replicated())
                self.replicated.append(local[name])
                continue
            e = int(m.group(2))
            owner = e // per_rank
            p = local[f"{m.group(1)}{e - owner * per_rank}{m.group(3)}"] if owner == self.rank else None
            self.plan.add(name, p, Owned(owner))
            if p is not None:
                self.experts.append(p)
        return model

    def sync_gradients(self, model) -> None:
        from ember.nn.parallel.distributed import average_gradients

        average_gradients(self.replicated)
        for p in self.experts:  # the all-to-all backward summed every rank's tokens: the mean is 1/n of it
            if p.grad is not None:
                p.grad._data *= 1.0 / self.world


def make_run(parallel: str, recipe) -> ShardedRun:
    """The run object of ``--parallel tp|pp|ep`` for the recipe's model (a clear error where it does not apply)."""
    if recipe.model not in SHARDED_MODES[parallel]:
        raise ValueError(
            f"--parallel {parallel} applies to {' and '.join(SHARDED_MODES[parallel])}, not '{recipe.model}'"
        )
    return {"tp": TensorParallelRun, "pp": PipelineRun, "ep": ExpertParallelRun}[parallel](recipe)
