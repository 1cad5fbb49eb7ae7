"""Default training recipes of ``ember train``, read from the model registry
(``ember.models.registry``), where each model's recipe sits beside its builder and task.

A recipe says which dataset a model trains on and with which optimizer and schedule; command-line
options override single fields. The same recipe run in PyTorch is the reference quoted in
BENCHMARKS.md (``bench/train_reference.py``).
"""

from __future__ import annotations

from ember.models.registry import MODELS, Recipe

__all__ = ["Recipe", "RECIPES"]

RECIPES: dict[str, Recipe] = {name: spec.recipe for name, spec in MODELS.items()}
