"""``Optimizer``: the base class of Ember's optimizers, with PyTorch's param groups and state format.

An optimizer holds ``param_groups`` (dicts with a ``"params"`` list and the hyperparameters of
that group, filled from ``defaults``) and ``state`` (a dict keyed by parameter). Its
``state_dict()`` replaces parameters by their position in the groups, exactly as
``torch.optim.Optimizer.state_dict`` does, so checkpoints have the same structure.

The step loop is shared: :meth:`Optimizer.step` evaluates the closure, then, under ``no_grad``,
collects each group's parameters that have a gradient, creates their state on first use
(``_init_state``) and hands lists to the subclass's ``_update(group, params, grads, states, impl)``.
``impl`` is ``"forloop"``, ``"foreach"`` or ``"fused"`` (:meth:`Optimizer._implementation`).
Updates are in-place Tensor ops (or multi-tensor / fused ops): no optimizer writes arrays
directly, so every update is an op that a capture of the step can see. A subclass written in
PyTorch's style (its own ``step`` with ``p.add_(...)``) works as well.
"""

from __future__ import annotations

import functools
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from copy import deepcopy
from itertools import chain
from typing import Any

from ember import _dtype
from ember.autograd import grad_mode
from ember.ops.foreach import _foreach_zero_
from ember.optim._common import step_tensor, to_scalar
from ember.optim._tracked import StateDict
from ember.tensor import Tensor

__all__ = ["Optimizer", "register_optimizer_step_post_hook", "register_optimizer_step_pre_hook", "required"]


class _RequiredParameter:
    """Singleton marking a hyperparameter that every param group must give."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()

_global_optimizer_pre_hooks: OrderedDict = OrderedDict()
_global_optimizer_post_hooks: OrderedDict = OrderedDict()


class RemovableHandle:
    """Returned by the ``register_*_hook`` methods; ``remove()`` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks_dict: OrderedDict):
        self._hooks = hooks_dict
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _register(hooks_dict: OrderedDict, hook: Callable, prepend: bool = False) -> RemovableHandle:
    handle = RemovableHandle(hooks_dict)
    hooks_dict[handle.id] = hook
    if prepend:
        hooks_dict.move_to_end(handle.id, last=False)
    return handle


def register_optimizer_step_pre_hook(hook: Callable) -> RemovableHandle:
    """Register ``hook(optimizer, args, kwargs)`` to run before every optimizer's ``step``."""
    return _register(_global_optimizer_pre_hooks, hook)


def register_optimizer_step_post_hook(hook: Callable) -> RemovableHandle:
    """Register ``hook(optimizer, args, kwargs)`` to run after every optimizer's ``step``."""
    return _register(_global_optimizer_post_hooks, hook)


def _to_scalar(x):
    """A hyperparameter as a Python number (a one-element tensor gives its value)."""
    return to_scalar(x)


def _hook_step(func: Callable) -> Callable:
    """Wrap a class's ``step`` so the step pre/post hooks run around it."""

    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        for pre_hook in chain(_global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(
                        f"{func} must return None or a tuple of (new_args, new_kwargs), but got {result}."
                    )
        out = func(self, *args, **kwargs)
        for post_hook in chain(self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()):
            post_hook(self, args, kwargs)
        return out

    wrapper.hooked = True
    return wrapper


class Optimizer:
    """Base class for all optimizers.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of dicts defining
            parameter groups (``{"params": [...], "lr": ...}``).
        defaults: the default hyperparameters, used by groups that do not set them.

    Example:
        >>> import ember
        >>> from ember.optim import SGD
        >>> w = ember.ones(2, requires_grad=True)
        >>> opt = SGD([w], lr=0.5)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([0., 0.], requires_grad=True)
    """

    def __init__(self, params, defaults: dict[str, Any]) -> None:
        if defaults.get("differentiable"):
            raise NotImplementedError(
                f"{type(self).__name__}: differentiable=True is not supported by ember.optim "
                "(steps update parameter arrays in place, outside the graph)"
            )
        if defaults.get("fused") and defaults.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        self.defaults = defaults
        self._optimizer_step_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict = OrderedDict()
        self._patch_step_function()

        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, "
                f"but got {_typename(params)}"
            )
        self.state: defaultdict = StateDict()  # a defaultdict(dict) counting changes (_tracked.py)
        self.param_groups: list[dict[str, Any]] = []

        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    # ----- pickling and printing -----
    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if isinstance(self.state, dict) and type(self.state) is not StateDict:
            self.state = StateDict(self.state)
        self.__dict__.setdefault("_optimizer_step_pre_hooks", OrderedDict())
        self.__dict__.setdefault("_optimizer_step_post_hooks", OrderedDict())
        self._patch_step_function()
        self.defaults.setdefault("differentiable", False)
        # Groups saved by older versions lack newer options; step counts saved as numbers
        # become 0-d tensors (as PyTorch's optimizers do on load).
        for group in self.param_groups:
            for key, value in self._group_fallbacks.items():
                group.setdefault(key, value)
        for p_state in self.state.values():
            if isinstance(p_state, dict) and "step" in p_state and not isinstance(p_state["step"], Tensor):
                p_state["step"] = step_tensor(float(p_state["step"]))

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        return text + ")"

    # ----- hooks -----
    def _patch_step_function(self) -> None:
        # As torch: the class's step is wrapped once, so every instance runs its hooks.
        if not getattr(self.__class__.step, "hooked", False):
            self.__class__.step = _hook_step(self.__class__.step)

    def register_step_pre_hook(self, hook: Callable) -> RemovableHandle:
        """Run ``hook(optimizer, args, kwargs)`` before each ``step``; it may return new ``(args, kwargs)``."""
        return _register(self._optimizer_step_pre_hooks, hook)

    def register_step_post_hook(self, hook: Callable) -> RemovableHandle:
        """Run ``hook(optimizer, args, kwargs)`` after each ``step``."""
        return _register(self._optimizer_step_post_hooks, hook)

    # ----- param groups -----
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters (with its own hyperparameters) to ``param_groups``.

        Example:
            >>> import ember
            >>> from ember.optim import SGD
            >>> opt = SGD([ember.ones(2, requires_grad=True)], lr=0.1)
            >>> opt.add_param_group({"params": [ember.ones(3, requires_grad=True)], "lr": 0.01})
            >>> [g["lr"] for g in opt.param_groups]
            [0.1, 0.01]
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a list instead."
            )
        else:
            param_group["params"] = list(params)

        tensors, names = [], []
        for param in param_group["params"]:
            if isinstance(param, tuple):
                names.append(param[0])
                tensors.append(param[1])
            else:
                tensors.append(param)
        param_group["params"] = tensors
        if names:
            if len(names) != len(tensors):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            param_group["param_names"] = names

        for param in tensors:
            if not isinstance(param, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {_typename(param)}")
            if not (param.is_leaf or param.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")

        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            param_group.setdefault(name, default)

        if len({id(p) for p in tensors}) != len(tensors):
            import warnings

            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; "
                "in future, this will cause an error; "
                "see github.com/pytorch/pytorch/issues/40967 for more information",
                stacklevel=3,
            )

        seen: set[int] = set()
        for group in self.param_groups:
            seen.update(id(p) for p in group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                which = "with names" if "param_names" in param_group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {which} to the optimizer"
                )
        if any(id(p) in seen for p in tensors):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    # ----- gradients -----
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all optimized tensors: to None (default), or to zeros in place."""
        to_zero = []
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if g.grad_fn is not None:
                        g.detach_()
                    else:
                        g.requires_grad_(False)
                    to_zero.append(g)
        if to_zero:
            with grad_mode.no_grad():
                _foreach_zero_(to_zero)

    def step(self, closure: Callable[[], Any] | None = None):
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss.

        The shared loop: the closure runs with grad mode on; then, under ``no_grad``, each
        group's parameters that have a gradient are updated by the subclass's ``_update``.
        """
        if type(self)._update is Optimizer._update:
            raise NotImplementedError
        loss = self._eval_closure(closure)
        with grad_mode.no_grad():
            for group in self.param_groups:
                params, grads = [], []
                for p in group["params"]:
                    g = p.grad
                    if g is not None:
                        params.append(p)
                        grads.append(g)
                if not params:
                    continue
                states = None
                if self._has_state(group):
                    states = []
                    for p in params:
                        state = self.state[p]
                        if not state:
                            self._init_state(p, state, group)
                        states.append(state)
                self._update(group, params, grads, states, self._implementation(group, params))
        return loss

    # ----- what a subclass of the shared step loop provides -----
    #: Whether the class has a fused implementation (``fused=True``).
    _supports_fused = False
    #: Options a loaded param group may lack, with their values (``__setstate__`` fills them in).
    _group_fallbacks: dict[str, Any] = {}

    def _has_state(self, group: dict[str, Any]) -> bool:
        """Whether ``group``'s parameters keep per-parameter state (SGD without momentum does not)."""
        return True

    def _init_state(self, p: Tensor, state: dict, group: dict[str, Any]) -> None:
        """Fill the empty ``state`` of parameter ``p`` on its first step."""

    def _update(self, group: dict[str, Any], params: list, grads: list, states: list | None, impl: str) -> None:
        """Update ``params`` in place from ``grads`` with ``group``'s hyperparameters."""
        raise NotImplementedError

    def _implementation(self, group: dict[str, Any], params: list) -> str:
        """``"fused"``, ``"foreach"`` or ``"forloop"`` for this group.

        An explicit ``fused=True`` or ``foreach=True`` wins; ``foreach=False`` (with ``fused``
        unset) is the per-tensor loop. When both are left at None, Ember takes its fastest
        correct path on CPU: the fused C kernel where the class has one, the kernels are
        available and every parameter is a float32/float64 CPU tensor; else the multi-tensor
        (foreach) path. (PyTorch defaults to the for-loop on CPU; the values agree.)
        """
        fused, foreach = group.get("fused"), group.get("foreach")
        if fused:
            for p in params:
                if not p.is_floating_point():
                    raise RuntimeError(
                        "`fused=True` requires all the params to be floating point Tensors of supported "
                        f"devices: ['cpu'] but {p.dtype} and {p.device.type}"
                    )
            return "fused"
        if foreach:
            return "foreach"
        if foreach is False:
            return "forloop"
        if fused is None and self._supports_fused and _fused_available(params):
            return "fused"
        return "foreach"

    @staticmethod
    def _eval_closure(closure: Callable[[], Any] | None):
        """Run the closure with grad mode on (the step itself may be called under no_grad)."""
        if closure is None:
            return None
        with grad_mode.enable_grad():
            return closure()

    # ----- checkpoints -----
    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state in torch's format: ``{'state': {index: {...}}, 'param_groups': [...]}``.

        Parameters are replaced by their position across the groups; the state tensors are the
        live ones (not copies), as in torch.

        Example:
            >>> import ember
            >>> from ember.optim import SGD
            >>> opt = SGD([ember.ones(2, requires_grad=True)], lr=0.1, momentum=0.9)
            >>> opt.state_dict()["param_groups"][0]["params"]
            [0]
        """
        mapping: dict[int, int] = {}
        start = 0

        def pack_group(group: dict[str, Any]) -> dict[str, Any]:
            nonlocal start
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                mapping.setdefault(id(p), i)
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        param_groups = [pack_group(g) for g in self.param_groups]
        packed_state = {(mapping[id(k)] if isinstance(k, Tensor) else k): v for k, v in self.state.items()}
        return {"state": packed_state, "param_groups": param_groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state made by :meth:`state_dict` (hyperparameters and per-parameter state).

        State tensors are cast to each parameter's dtype and device (``step`` counters are kept
        as they are); tensors that already match are used as they are, as in torch.
        """
        state_dict = state_dict.copy()
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
            )
        id_map = dict(
            zip(
                chain.from_iterable(g["params"] for g in saved_groups),
                chain.from_iterable(g["params"] for g in groups),
            )
        )

        def cast(param: Tensor, value, key=None):
            if isinstance(value, Tensor):
                if key == "step":
                    return value
                if param.is_floating_point():
                    return value.to(dtype=param.dtype, device=param.device)
                return value.to(device=param.device)
            if isinstance(value, dict):
                return {k: cast(param, v, key=k) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return type(value)(cast(param, v) for v in value)
            return value

        state: defaultdict = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                state[id_map[k]] = cast(id_map[k], v)
            else:
                state[k] = v

        def update_group(group: dict[str, Any], new_group: dict[str, Any]) -> dict[str, Any]:
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            return new_group

        param_groups = [update_group(g, ng) for g, ng in zip(groups, saved_groups)]
        self.__setstate__({"state": state, "param_groups": param_groups})


_FUSED_DTYPES = (_dtype.float32, _dtype.float64)


def _fused_available(params: list) -> bool:
    """Whether the fused C kernels are built and take every parameter (float32/float64 on CPU)."""
    from ember.backends.ckernels import optim as kernels

    for p in params:
        dev = p.__dict__.get("_traced_from") or p.device  # ember.compile traces it on meta
        if dev.type != "cpu" or p.dtype not in _FUSED_DTYPES:
            return False
    return kernels.available()


def _typename(obj) -> str:
    if isinstance(obj, Tensor):
        return obj.type()
    module = type(obj).__module__
    name = type(obj).__qualname__
    return name if module in ("builtins", None) else f"{module}.{name}"
