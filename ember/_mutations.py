"""One global count of changes to what a compiled step's guards read (the "mutation epoch").

``MUTATIONS[0]`` advances whenever existing Python state that ``ember.compile``'s step guards
depend on may have changed:

- a tensor's ``_data``, ``_grad``, ``_requires_grad`` (or ``_device``) rebound on an *existing*
  tensor: the ``data``/``grad``/``requires_grad`` setters, ``detach_()``, ``resize_()`` and the
  other shape-changing in-place methods, ``out=``, an in-place op that gives a tensor autograd
  history, the engine's ``.grad`` accumulation, ``Module.to()``/``_apply``, DDP and ZeRO's
  gradient buckets, the compile capture's own swaps;
- a module's attributes (``Module.__setattr__``/``__delattr__`` when the value changes:
  ``training``, a parameter, buffer or child replaced; ``register_*``; ``functional_call``);
- an optimizer's state (``optim/_tracked.py``: its counted dicts share this counter).

A new tensor needs no bump: nothing guarded can be a new object (guards hold what they read).
A compiled step's own ``.grad`` writebacks do not count where they keep its guards
(``compile/effects.keeps_guards``).
``compile/effects.FastGuards`` remembers the count at its last passing check: while it has not
moved, everything it guards is unchanged and the check is one integer comparison (an
optimizer's ``param_groups``, plain dicts, are still compared, a few dozen objects). Code that
rebinds one of these attributes on an existing object must call :func:`bump` (or write
``MUTATIONS[0] += 1``); ``tests/test_compile_guard_stamps.py`` checks each way a user can change
a guarded thing.

Example:
    >>> import ember
    >>> from ember._mutations import MUTATIONS
    >>> w, before = ember.zeros(2), MUTATIONS[0]
    >>> w.requires_grad_()
    tensor([0., 0.], requires_grad=True)
    >>> MUTATIONS[0] > before
    True
"""

from __future__ import annotations

__all__ = ["GRAD_READS", "MUTATIONS", "STRUCTURE", "bump", "structure_changed"]

#: The count (one list cell: cheap to read and to advance).
MUTATIONS = [0]
#: Reads of ``.grad`` through the ``grad`` property, the public way to get hold of a gradient
#: tensor (``p.grad``, ``p.grad.numpy()``, ``weakref.ref(p.grad)``, a view of it): while it
#: stands, a compiled step's gradient outputs are held by nothing but their ``p.grad`` and are
#: reused without reading them (``compile/step_run.py``). Reaching ``_grad`` by introspection
#: (``vars(p)``, ``p.__dict__``, ``gc``) bypasses it: don't.
GRAD_READS = [0]
#: Changes to a module's parameters, buffers or children (registered, replaced, deleted; each
#: also advances ``MUTATIONS``): a module-only ``ember.compile`` compares the modules it traced
#: through only when this moved (``compile/api._Entry``), as a backward moves ``MUTATIONS``
#: every step.
STRUCTURE = [0]


def bump() -> None:
    """Count one change."""
    MUTATIONS[0] += 1


def structure_changed() -> None:
    """Count a change to a module's parameters, buffers or children."""
    MUTATIONS[0] += 1
    STRUCTURE[0] += 1
