"""Random primitives inside ``vmap``: the ``randomness=`` modes of ``torch.func.vmap``.

* ``"error"`` (the default): a random op raises PyTorch's error.
* ``"same"``: every batch element sees the same random numbers. A random op with no batched
  input draws once (its result is unbatched, shared by the batch), as do dropout masks; an
  in-place fill of a batched tensor runs per element with the generator reset to the same state
  for each. ``bernoulli``/``poisson``/``multinomial`` of a batched input raise, as in PyTorch.
* ``"different"``: every batch element gets its own draws. Factories (``rand``, ``randn``,
  ``randint``) and elementwise draws (dropout masks, ``bernoulli``, ``poisson``, in-place fills)
  draw once for the whole physical batch; the others (``multinomial``, ``standard_gamma``) run
  per element, drawing in turn.
"""

from __future__ import annotations

from ember.func import _batching as B_

__all__ = ["RANDOM", "random_op"]

RANDOM = {
    "rand",
    "randn",
    "randint",
    "bernoulli",
    "poisson",
    "multinomial",
    "standard_gamma",
    "normal_",
    "uniform_",
    "bernoulli_",
    "cauchy_",
    "exponential_",
    "geometric_",
    "log_normal_",
    "random_",
    "dropout_mask",
    "alpha_dropout_mask",
}
_FACTORIES = {"rand", "randn", "randint"}
_ELEMENTWISE = {"bernoulli", "poisson", "alpha_dropout_mask"}  # one draw per input element

_ERROR = (
    "vmap: called random operation while in randomness error mode. Please either use the 'same' or "
    "'different' randomness flags on vmap or perform the randomness operation out of vmap"
)
_SAME_BATCHED = (
    "Vmap does not currently support same randomness with a batched tensor input. Please file an issue with functorch"
)
_UNBATCHED_INPLACE = (
    "vmap: Cannot ask for different inplace randomness on an unbatched tensor. This will appear like "
    "same randomness. If this is necessary for your usage, please file an issue with functorch."
)


def random_op(prim, inputs, params, level, size, dispatch, randomness):
    """Run random primitive ``prim`` at a vmap level in mode ``randomness``."""
    if randomness == "error":
        raise RuntimeError(_ERROR)
    batched = [B_.is_batched(x, level) for x in inputs]
    if prim.inplace and not batched[0]:
        if randomness == "different":
            raise RuntimeError(_UNBATCHED_INPLACE)
        return dispatch(prim, inputs, params)  # "same": one fill of the unbatched tensor
    if randomness == "same":
        if not any(batched):
            return dispatch(prim, inputs, params)
        if prim.name in ("dropout_mask", "alpha_dropout_mask"):  # one mask of the logical shape
            return dispatch(prim, (inputs[0]._value[0],) + tuple(inputs[1:]), params)
        if not prim.inplace:
            raise RuntimeError(_SAME_BATCHED)
        return _per_element(prim, inputs, params, level, size, dispatch, same=True)
    # "different"
    name = prim.name
    if name in _FACTORIES:
        return B_.wrap(dispatch(prim, inputs, dict(params, shape=(size,) + tuple(params["shape"]))), level)
    if prim.inplace:
        dispatch(prim, (inputs[0]._value,) + tuple(inputs[1:]), params)  # fills the whole batch
        return inputs[0]
    if name == "dropout_mask":
        x = inputs[0]
        phys = B_._expand_to(x, level, size)
        return B_.wrap(dispatch(prim, (phys,), dict(params, shape=(size,) + tuple(params["shape"]))), level)
    if name in _ELEMENTWISE:
        args = tuple(B_._expand_to(x, level, size) if hasattr(x, "_data") else x for x in inputs)
        return B_.wrap(dispatch(prim, args, params), level)
    return _per_element(prim, inputs, params, level, size, dispatch, same=False)


def _per_element(prim, inputs, params, level, size, dispatch, same: bool):
    """The primitive once per batch element, stacked; with ``same`` each from the same RNG state."""
    import ember
    from ember import random as _random

    state = _random.get_rng_state() if same else None
    results = []
    for i in range(size):
        if same:
            _random.set_rng_state(state)
        args = tuple(x._value[i] if B_.is_batched(x, level) else x for x in inputs)
        results.append(dispatch(prim, args, params))
    if prim.inplace:
        return inputs[0]
    return B_.wrap(ember.stack(results), level)
