"""``functional_call``: run a module with some parameters and buffers swapped for given tensors."""

from __future__ import annotations

import contextlib

from ember._mutations import structure_changed as bump  # parameters swapped: a structure change

__all__ = ["functional_call"]


def _owner(module, dotted: str):
    *path, leaf = dotted.split(".")
    m = module
    for p in path:
        m = getattr(m, p)
    return m, leaf


@contextlib.contextmanager
def _reparametrize(module, tensors: dict, tie_weights: bool, strict: bool):
    params = dict(module.named_parameters(remove_duplicate=False))
    buffers = dict(module.named_buffers(remove_duplicate=False))
    known = {**params, **buffers}
    if strict:
        missing = sorted(set(known) - set(tensors))
        unexpected = sorted(set(tensors) - set(known))
        if missing or unexpected:
            msg = f"Error(s) in reparametrizing for {type(module).__name__}:\n"
            if unexpected:
                msg += "\tUnexpected key(s): " + ", ".join(repr(k) for k in unexpected) + ".\n"
            if missing:
                msg += "\tMissing key(s): " + ", ".join(repr(k) for k in missing) + ".\n"
            raise RuntimeError(msg)
    tensors = dict(tensors)
    if tie_weights:
        # Names that share one tensor (tied weights) all take the value given for any of them.
        by_id: dict = {}
        for name, t in known.items():
            by_id.setdefault(id(t), []).append(name)
        for names in by_id.values():
            if len(names) < 2:
                continue
            given = [n for n in names if n in tensors]
            if not given:
                continue
            first = tensors[given[0]]
            if any(tensors[n] is not first for n in given[1:]):
                raise ValueError(
                    f"functional_call got multiple values for keys {sorted(given)}, which are tied. "
                    "Consider using tie_weights=False"
                )
            for n in names:
                tensors[n] = first
    saved = []
    bump()  # module attributes swapped: compiled steps' guards (ember/_mutations.py)
    try:
        for name, t in tensors.items():
            owner, leaf = _owner(module, name)
            for store in ("_parameters", "_buffers"):
                d = owner.__dict__[store]
                if leaf in d:
                    saved.append((d, leaf, d[leaf]))
                    d[leaf] = t
                    break
            else:
                saved.append((owner.__dict__, leaf, owner.__dict__.get(leaf, _MISSING)))
                owner.__dict__[leaf] = t
        yield
    finally:
        bump()
        for d, leaf, old in reversed(saved):
            if old is _MISSING:
                d.pop(leaf, None)
            else:
                d[leaf] = old


_MISSING = object()


def functional_call(
    module, parameter_and_buffer_dicts, args=None, kwargs=None, *, tie_weights: bool = True, strict: bool = False
):
    """Call ``module(*args, **kwargs)`` with its parameters/buffers replaced by the given tensors.

    ``parameter_and_buffer_dicts`` is a dict from dotted names to tensors (or a sequence of dicts
    with distinct keys); names not given keep the module's own tensors (unless ``strict``). The
    module is unchanged afterwards. With ``tie_weights``, tied parameters take one given value.

    Example:
        >>> import ember
        >>> from ember.func import functional_call
        >>> lin = ember.nn.Linear(2, 1, bias=False)
        >>> functional_call(lin, {"weight": ember.ones(1, 2)}, (ember.tensor([[1.0, 2.0]]),))
        tensor([[3.]])
    """
    if isinstance(parameter_and_buffer_dicts, dict):
        merged = parameter_and_buffer_dicts
    elif isinstance(parameter_and_buffer_dicts, (list, tuple)):
        merged = {}
        for d in parameter_and_buffer_dicts:
            dup = set(merged) & set(d)
            if dup:
                raise ValueError(
                    f"{sorted(dup)} appeared in multiple dictionaries; behavior of functional call is ambiguous"
                )
            merged.update(d)
    else:
        raise ValueError(
            f"Expected parameter_and_buffer_dicts to be a dict, or a list/tuple of dicts, but got {type(parameter_and_buffer_dicts)}"
        )
    if args is None:
        args = ()
    elif not isinstance(args, tuple):
        args = (args,)
    with _reparametrize(module, merged, tie_weights, strict):
        return module(*args, **(kwargs or {}))
