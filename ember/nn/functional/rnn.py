"""Recurrent cells as fused primitives, and the sequence loop shared by RNN / LSTM / GRU.

One time step is one graph node. The input projection ``x W_ih^T + b_ih`` of a whole sequence is
a single matmul done before the loop; each step then adds ``h W_hh^T + b_hh`` and applies the
gate nonlinearities on arrays. Its backward is written on arrays too (one GEMM for the hidden
gradient, one for ``W_hh``), so a long sequence costs one node per step forward and backward.
The LSTM step's input and output are ``[h | c]`` concatenated, so a step has a single output and
the next step reads both states from it. Double backward recomputes the step with ember ops.

The Python loop runs over time steps only; the engine is iterative, so a 1000-step sequence
backpropagates without recursion.
"""

from __future__ import annotations

import numpy as np

from ember._lowp import is_low
from ember.autograd.node import Node
from ember.ops._base import Tensor, grad_state
from ember.ops.dispatch import Primitive, apply

__all__ = ["lstm_step", "gru_step", "rnn_step", "recurrent_sequence", "rnn_sequence"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The tanh form never overflows and is a single pass over the array.
    return np.tanh(x * 0.5) * 0.5 + 0.5


def _hidden_gates(h: np.ndarray, w_hh: np.ndarray, b_hh) -> np.ndarray:
    gh = h @ w_hh.T
    if b_hh is not None:
        gh += b_hh
    return gh


class _Step(Node):
    """Common parts: inputs are ``(gi, state, w_hh[, b_hh])``; subclasses give the array math."""

    __slots__ = ("saved",)

    def backward(self, g):
        if grad_state.enabled:
            return self._composite_backward(g)
        need = tuple(t is not None and t._requires_grad for t in self.inputs)
        out = apply(_STEP_BACKWARD, g, *self.inputs[:3], node=self, need=need)
        self.saved = None
        return out

    def _composite_backward(self, g):
        from ember.autograd import grad

        inputs = tuple(t.view_as(t) for t in self.inputs if t is not None)
        b = inputs[3] if len(inputs) == 4 else None
        out = self.composite(inputs[0], inputs[1], inputs[2], b)
        wanted = [t for t in inputs if t._requires_grad]
        grads = iter(grad(out, wanted, g, create_graph=True, allow_unused=True))
        return tuple(next(grads) if t._requires_grad else None for t in inputs)

    @staticmethod
    def hidden(state):
        return state

    @staticmethod
    def join(dh, dstate):
        return dh + dstate


def _step_backward_impl(g, gi, state, w_hh, node, need):
    """(dgi, dstate, dw_hh, db_hh) of one step on arrays, from the node's saved gates."""
    dgi, dgh, dstate = node.grads(g._data)  # gate gradients w.r.t. input and hidden projections
    h = node.hidden(state._data)
    dh = dgh @ w_hh._data
    dstate = dh if dstate is None else node.join(dh, dstate)
    return (
        dgi if need[0] else None,
        dstate if need[1] else None,
        dgh.T @ h if need[2] else None,
        dgh.sum(0) if need[3] else None,
    )


def _inputs_meta(g, *inputs, node, need):
    """Meta: gradients shaped like the inputs that need them."""
    empty = g._device.backend.xp.empty
    ins = list(inputs) + list(node.inputs[len(inputs) :])
    return tuple(empty(x._data.shape, x._data.dtype) if n else None for x, n in zip(ins, need))


_STEP_BACKWARD = Primitive("rnn_step_backward", None, _step_backward_impl, multi=True)
_STEP_BACKWARD.register("meta", _inputs_meta)


def _step_impl(arrays):
    def impl(gi, state, w_hh, b_hh, **params):
        out, saved = arrays(gi._data, state._data, w_hh._data, None if b_hh is None else b_hh._data, **params)
        # NumPy computes bfloat16/float16 math in float32: the step's output keeps the state's dtype
        return out.astype(state._data.dtype, copy=False), {"saved": saved}

    return impl


def _step_meta(gi, state, w_hh, b_hh, **params):
    return state._device.backend.xp.empty(state._data.shape, state._data.dtype), {"saved": None}


# --------------------------------------------------------------------------- LSTM
class LSTMStep(_Step):
    __slots__ = ()

    @staticmethod
    def hidden(state):
        return state[:, : state.shape[1] // 2]

    @staticmethod
    def join(dh, dc):
        return np.concatenate([dh, dc], axis=1)

    def grads(self, g):
        i, f, gg, o, c_prev, tc = self.saved
        hsz = i.shape[1]
        dh, dc = g[:, :hsz], g[:, hsz:]
        dc = dc + dh * o * (1 - tc * tc)
        do = dh * tc
        dgates = np.concatenate(
            [dc * gg * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - gg * gg), do * o * (1 - o)], axis=1
        )
        return dgates, dgates, dc * f

    @staticmethod
    def composite(gi, hc, w_hh, b_hh):
        from ember.ops.movement import cat

        hsz = hc.shape[1] // 2
        h, c = hc[:, :hsz], hc[:, hsz:]
        gates = gi + h @ w_hh.t()
        if b_hh is not None:
            gates = gates + b_hh
        i, f, g, o = gates.chunk(4, 1)
        c2 = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return cat([o.sigmoid() * c2.tanh(), c2], 1)


def _lstm_arrays(gi, hcd, w_hh, b_hh):
    hsz = hcd.shape[1] // 2
    h, c = hcd[:, :hsz], hcd[:, hsz:]
    gates = gi + _hidden_gates(h, w_hh, b_hh)
    sig = _sigmoid(gates)
    i, f, o = sig[:, :hsz], sig[:, hsz : 2 * hsz], sig[:, 3 * hsz :]
    g = np.tanh(gates[:, 2 * hsz : 3 * hsz])
    c2 = f * c + i * g
    tc = np.tanh(c2)
    return np.concatenate([o * tc, c2], axis=1), (i, f, g, o, c, tc)


def lstm_step(gi: Tensor, hc: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """One LSTM step: ``gi = x W_ih^T + b_ih`` (B, 4H), ``hc = [h | c]`` (B, 2H) -> new ``[h | c]``."""
    return apply(_LSTM_STEP, gi, hc, w_hh, b_hh)


# --------------------------------------------------------------------------- GRU
class GRUStep(_Step):
    __slots__ = ()

    def grads(self, dh2):
        r, z, n, gh_n, h = self.saved
        dz = dh2 * (h - n)
        dn = dh2 * (1 - z) * (1 - n * n)
        dr = dn * gh_n * r * (1 - r)
        dz = dz * z * (1 - z)
        dgi = np.concatenate([dr, dz, dn], axis=1)
        dgh = np.concatenate([dr, dz, dn * r], axis=1)
        return dgi, dgh, dh2 * z

    @staticmethod
    def composite(gi, h, w_hh, b_hh):
        gh = h @ w_hh.t()
        if b_hh is not None:
            gh = gh + b_hh
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r = (i_r + h_r).sigmoid()
        z = (i_z + h_z).sigmoid()
        n = (i_n + r * h_n).tanh()
        return (1 - z) * n + z * h


def _gru_arrays(gid, hd, w_hh, b_hh):
    hsz = hd.shape[1]
    gh = _hidden_gates(hd, w_hh, b_hh)
    rz = _sigmoid(gid[:, : 2 * hsz] + gh[:, : 2 * hsz])
    r, z = rz[:, :hsz], rz[:, hsz:]
    gh_n = gh[:, 2 * hsz :]
    n = np.tanh(gid[:, 2 * hsz :] + r * gh_n)
    return (1 - z) * n + z * hd, (r, z, n, gh_n, hd)


def gru_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """One GRU step (gates r, z, n as PyTorch): ``gi = x W_ih^T + b_ih`` (B, 3H), ``h`` (B, H)."""
    return apply(_GRU_STEP, gi, h, w_hh, b_hh)


# --------------------------------------------------------------------------- Elman RNN
class RNNStep(_Step):
    __slots__ = ("relu",)

    def grads(self, dh2):
        (h2,) = self.saved
        dpre = dh2 * (h2 > 0) if self.relu else dh2 * (1 - h2 * h2)
        return dpre, dpre, None

    def composite(self, gi, h, w_hh, b_hh):
        pre = gi + h @ w_hh.t()
        if b_hh is not None:
            pre = pre + b_hh
        return pre.relu() if self.relu else pre.tanh()


def _rnn_arrays(gid, hd, w_hh, b_hh, relu):
    pre = gid + _hidden_gates(hd, w_hh, b_hh)
    out = np.maximum(pre, 0) if relu else np.tanh(pre)
    return out, (out,)


def rnn_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, nonlinearity: str = "tanh") -> Tensor:
    """One Elman RNN step: ``act(gi + h W_hh^T + b_hh)`` with ``act`` tanh or relu."""
    return apply(_RNN_STEP, gi, h, w_hh, b_hh, relu=nonlinearity == "relu")


_LSTM_STEP = Primitive("lstm_step", LSTMStep, _step_impl(_lstm_arrays), extras=True)
_GRU_STEP = Primitive("gru_step", GRUStep, _step_impl(_gru_arrays), extras=True)
_RNN_STEP = Primitive("rnn_step", RNNStep, _step_impl(_rnn_arrays), extras=True)
for _prim in (_LSTM_STEP, _GRU_STEP, _RNN_STEP):
    _prim.register("meta", _step_meta)


# --------------------------------------------------------------------------- whole-sequence primitive
_KINDS = {"LSTM": (LSTMStep, _lstm_arrays), "GRU": (GRUStep, _gru_arrays), "RNN": (RNNStep, _rnn_arrays)}


class RecurrentSequence(Node):
    """One direction of one layer over all time steps: ``(gi_all (T, B, G), state0, w_hh[, b_hh])``
    -> states ``(T, B, S)`` (``[h | c]`` for LSTM). Backward is backpropagation through time on
    arrays; slicing per-step inputs out of ``gi_all`` in the graph would cost a full-size zero
    gradient per step.

    The loop over time only carries what depends on the previous step: the gate gradients of all
    steps go into one ``(T, B, G)`` buffer, and the ``W_hh`` / ``b_hh`` gradients are one GEMM and
    one sum after the loop (per-step ``dgh^T h`` products have K = batch, which BLAS runs slowly).
    """

    __slots__ = ("kind", "reverse", "relu", "saved", "prev", "out_vc")

    def backward(self, g):
        if grad_state.enabled:
            return self._composite_backward(g)
        if self.kind == "LSTM" and self.out_vc[0] != 0:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: the output of {self.name()} is at version {self.out_vc[0]}; expected version 0 "
                "instead."
            )
        need = tuple(t is not None and t._requires_grad for t in self.inputs)
        return apply(_SEQUENCE_BACKWARD, g, *self.inputs[:3], node=self, need=need)

    def _steps_backward(self, gd, wd):
        """GRU / RNN: the step classes' gate-gradient formulas, one step at a time."""
        step_cls = _KINDS[self.kind][0]
        helper = step_cls.__new__(step_cls)
        if self.kind == "RNN":
            helper.relu = self.relu
        steps = gd.shape[0]
        dgi_all = np.empty((steps,) + self.saved[0][0].shape[:1] + (wd.shape[0],), dtype=wd.dtype)
        dgh_all = dgi_all if self.kind == "RNN" else np.empty_like(dgi_all)
        carry = None
        for t in range(steps) if self.reverse else range(steps - 1, -1, -1):
            g_t = gd[t] if carry is None else gd[t] + carry
            helper.saved = self.saved[t]
            dgi, dgh, direct = helper.grads(g_t)
            dgi_all[t] = dgi
            if dgh_all is not dgi_all:
                dgh_all[t] = dgh
            dh = dgh @ wd
            carry = dh if direct is None else step_cls.join(dh, direct)
        return dgi_all, dgh_all, np.stack(self.prev), carry

    def _composite_backward(self, g):
        from ember.autograd import grad

        inputs = tuple(t.view_as(t) for t in self.inputs if t is not None)
        out = _sequence_by_steps(self.kind, self.reverse, self.relu, *inputs)
        wanted = [t for t in inputs if t._requires_grad]
        grads = iter(grad(out, wanted, g, create_graph=True, allow_unused=True))
        return tuple(next(grads) if t._requires_grad else None for t in inputs)


def _sequence_backward_impl(g, gi_all, state0, w_hh, node, need, k=None):
    """Backpropagation through time on arrays: (dgi_all, dstate0, dw_hh, db_hh). ``k``: the C
    kernels' module in the cpu implementation (ember/backends/cpu_kernels.py), else None."""
    if node.kind == "LSTM":
        dgi_all, dgh_all, hprev, dstate = _lstm_sequence_backward(node, g._data, w_hh._data, k)
    else:
        dgi_all, dgh_all, hprev, dstate = node._steps_backward(g._data, w_hh._data)
    rows = dgh_all.reshape(-1, dgh_all.shape[-1])
    hrows = hprev.reshape(-1, hprev.shape[-1])
    dw = None
    if need[2]:
        dw = k.matmul(rows.T, hrows) if k is not None and k.has_gemm(rows.dtype) else None
        dw = rows.T @ hrows if dw is None else dw
    return (
        dgi_all if need[0] else None,
        dstate if need[1] else None,
        dw,
        rows.sum(0) if need[3] else None,
    )


_SEQUENCE_BACKWARD = Primitive("recurrent_sequence_backward", None, _sequence_backward_impl, multi=True)
_SEQUENCE_BACKWARD.register("meta", _inputs_meta)


# --------------------------------------------------------------------------- LSTM over a sequence
# With the C kernels a step is one GEMM and one fused pointwise call, gates in PyTorch's order
# (i, f, g, o). The NumPy path keeps the gates in the order (i, f, o, g) and computes all four
# activations with one np.exp call: sigmoid(x) = 1 / (1 + exp(-x)) and tanh(x) = 2 sigmoid(2x) - 1,
# with the factors -1 and -2 folded into the input projections and the weights once per sequence
# (NumPy's float32 exp is about twice as fast as its tanh, and a step is then 3 passes over the
# gates instead of 5). ``saved`` is ``(act, tc, order)`` with ``order`` naming the gate layout.
def _lstm_sequence_forward(gd, state, wd, bd, order, k=None):
    """Arrays of one LSTM direction: returns ``out (T, B, 2H)`` and ``(act, tc, gate order)``."""
    steps, batch, g4 = gd.shape
    hsz = g4 // 4
    dt = np.result_type(gd, state, wd)
    out = np.empty((steps, batch, 2 * hsz), dtype=dt)
    tc = np.empty((steps, batch, hsz), dtype=dt)
    act = np.empty((steps, batch, g4), dtype=dt)  # the activations of every step
    if k is not None and not is_low(gd) and k.has_gemm(dt):  # AVX-512: the whole loop in one C call
        res = k.lstm_sequence_forward(gd, bd, wd, state, reverse=steps > 1 and order[0] != 0)
        if res is not None:
            out, act, tc = res
            return out, (act, tc, "ifgo")
    kernels = k.lstm_step_kernels(gd, state, wd, bd) if k is not None and not is_low(gd) else None  # float32/64 only
    if kernels:
        args = (np.ascontiguousarray(gd), bd, np.ascontiguousarray(wd.T), np.ascontiguousarray(state))
        _lstm_forward_steps(kernels[0], *args, act, out, tc, order)
        return out, (act, tc, "ifgo")
    perm = (slice(0, 2 * hsz), slice(3 * hsz, g4), slice(2 * hsz, 3 * hsz))  # i f | o | g
    wts = np.empty((hsz, g4), dtype=dt)  # W_hh^T, columns in (i, f, o, g) order, scaled
    col = 0
    for part, k in zip(perm, (-1.0, -1.0, -2.0)):
        width = part.stop - part.start
        dst = act[:, :, col : col + width]  # the pre-activations first
        if bd is None:
            np.multiply(gd[:, :, part], k, out=dst)
        else:
            np.add(gd[:, :, part], bd[part], out=dst)
            dst *= k
        np.multiply(wd[part].T, k, out=wts[:, col : col + width])
        col += width
    hh = np.empty((batch, g4), dtype=dt)
    tmp = np.empty((batch, hsz), dtype=dt)
    h, c = state[:, :hsz], state[:, hsz:]
    with np.errstate(over="ignore"):  # exp(-x) = inf for very negative x gives sigmoid 0, as it should
        for t in order:
            a = act[t]
            np.matmul(h, wts, out=hh)
            a += hh
            np.exp(a, out=a)
            a += 1
            np.reciprocal(a, out=a)
            g = a[:, 3 * hsz :]
            g *= 2
            g -= 1
            h_new, c_new = out[t, :, :hsz], out[t, :, hsz:]
            np.multiply(a[:, hsz : 2 * hsz], c, out=c_new)  # c' = f c + i g
            np.multiply(a[:, :hsz], g, out=tmp)
            c_new += tmp
            np.tanh(c_new, out=tc[t])
            np.multiply(a[:, 2 * hsz : 3 * hsz], tc[t], out=h_new)  # h' = o tanh(c')
            h, c = h_new, c_new
    return out, (act, tc, "ifog")


def _lstm_forward_steps(step, gi, bias, w_t, state, act, out, tc, order):
    """The time loop on the C step kernel: per step one GEMM into ``hh``, then ``step`` on raw
    pointers into the contiguous (T, ...) arrays (no per-step array views for the kernel)."""
    steps, batch, g4 = act.shape
    hsz, isz = g4 // 4, act.itemsize
    hh = np.empty((batch, g4), dtype=act.dtype)
    p_gi, p_act, p_out, p_tc, p_hh = (a.ctypes.data for a in (gi, act, out, tc, hh))
    p_bias = None if bias is None else bias.ctypes.data
    h, p_c, c_stride = state[:, :hsz], state.ctypes.data + hsz * isz, state.shape[1]
    # Check the buffers once for the first and the last step (the offsets grow linearly in t).
    step.check((gi, 0), bias, hh, (state, hsz), c_stride, (act, 0), (out, 0), (tc, 0), batch, hsz)
    last, prev_c = (steps - 1) * batch, (out, (steps - 2) * batch * 2 * hsz + hsz) if steps > 1 else (state, hsz)
    step.check((gi, last * g4), bias, hh, prev_c, 2 * hsz if steps > 1 else c_stride, (act, last * g4),
               (out, last * 2 * hsz), (tc, last * hsz), batch, hsz)  # fmt: skip
    step = step.raw
    for t in order:
        np.matmul(h, w_t, out=hh)
        at4, row = t * batch * g4 * isz, p_out + t * batch * 2 * hsz * isz
        step(p_gi + at4, p_bias, p_hh, p_c, c_stride, p_act + at4, row, p_tc + t * batch * hsz * isz, batch, hsz)
        h, p_c, c_stride = out[t, :, :hsz], row + hsz * isz, 2 * hsz


def _previous(out, state0, reverse):
    """The state each step started from, ``(T, B, S)``: ``state0`` then the outputs shifted by one."""
    prev = np.empty(out.shape, dtype=out.dtype)
    if reverse:
        prev[-1] = state0
        prev[:-1] = out[1:]
    else:
        prev[0] = state0
        prev[1:] = out[:-1]
    return prev


def _lstm_sequence_backward(node, gd, wd, k=None):
    """BPTT for one LSTM direction. The factors that do not depend on the incoming gradient are
    computed for all steps at once before the loop, so a step is a few multiplies and one GEMM."""
    act, tc, gate_order = node.saved
    steps, batch, g4 = act.shape
    hsz = g4 // 4
    dt = act.dtype
    prev = _previous(node.prev, node.inputs[1]._data, node.reverse)
    if k is not None and not is_low(gd) and gate_order == "ifgo" and k.has_gemm(dt):
        res = k.lstm_sequence_backward(act, prev, tc, gd, wd, node.reverse)
        if res is not None:
            dgates, carry_h, carry_c = res
            return dgates, dgates, prev[:, :, :hsz], np.concatenate([carry_h, carry_c], axis=1)
    kernels = k.lstm_step_kernels(act, gd, wd) if k is not None and not is_low(gd) else None
    if kernels and gate_order == "ifgo":
        return _lstm_backward_steps(kernels[1], act, tc, prev, np.ascontiguousarray(gd), wd, node.reverse)
    if gate_order == "ifgo":  # made by the C forward, but the kernels are gone: the NumPy layout
        act = np.concatenate([act[:, :, : 2 * hsz], act[:, :, 3 * hsz :], act[:, :, 2 * hsz : 3 * hsz]], axis=2)
    i, f, o, gg = (act[:, :, k * hsz : (k + 1) * hsz] for k in range(4))
    # dgates = [dct * (g i (1-i)), dct * (c_prev f (1-f)), dct * (i (1-g^2)), dh * (tc o (1-o))]
    # (PyTorch's gate order i, f, g, o), with dct = dc + dh * o (1 - tc^2).
    fac = np.empty((steps, batch, 4, hsz), dtype=dt)
    np.multiply(gg, i - i * i, out=fac[:, :, 0])
    np.multiply(prev[:, :, hsz:], f - f * f, out=fac[:, :, 1])
    np.multiply(i, 1 - gg * gg, out=fac[:, :, 2])
    np.multiply(tc, o - o * o, out=fac[:, :, 3])
    dtc = o * (1 - tc * tc)
    dgates = np.empty((steps, batch, 4, hsz), dtype=dt)
    dh = np.empty((batch, hsz), dtype=dt)
    dc = np.empty((batch, hsz), dtype=dt)
    carry_h = np.zeros((batch, hsz), dtype=dt)
    carry_c = np.zeros((batch, hsz), dtype=dt)
    tmp = np.empty((batch, hsz), dtype=dt)
    for t in range(steps) if node.reverse else range(steps - 1, -1, -1):
        np.add(gd[t, :, :hsz], carry_h, out=dh)
        np.add(gd[t, :, hsz:], carry_c, out=dc)
        np.multiply(dh, dtc[t], out=tmp)
        dc += tmp
        np.multiply(fac[t, :, :3], dc[:, None, :], out=dgates[t, :, :3])
        np.multiply(fac[t, :, 3], dh, out=dgates[t, :, 3])
        np.multiply(dc, f[t], out=carry_c)
        np.matmul(dgates[t].reshape(batch, g4), wd, out=carry_h)
    dgates = dgates.reshape(steps, batch, g4)
    return dgates, dgates, prev[:, :, :hsz], np.concatenate([carry_h, carry_c], axis=1)


def _lstm_backward_steps(step, act, tc, prev, gd, wd, reverse):
    """BPTT on the C step kernel: per step the fused pointwise gradient, then one GEMM for the
    gradient reaching the previous hidden state."""
    steps, batch, g4 = act.shape
    hsz, isz = g4 // 4, act.itemsize
    dgates = np.empty((steps, batch, g4), dtype=act.dtype)
    carry_h = np.zeros((batch, hsz), dtype=act.dtype)
    carry_c = np.zeros((batch, hsz), dtype=act.dtype)
    p_act, p_prev, p_tc, p_g, p_dg = (a.ctypes.data for a in (act, prev, tc, gd, dgates))
    p_ch, p_cc = carry_h.ctypes.data, carry_c.ctypes.data
    last = (steps - 1) * batch  # the largest offsets; checked once, then raw pointers per step
    step.check((act, last * g4), (prev, last * 2 * hsz + hsz), 2 * hsz, (tc, last * hsz), (gd, last * 2 * hsz),
               carry_h, carry_c, (dgates, last * g4), batch, hsz)  # fmt: skip
    step = step.raw
    for t in range(steps) if reverse else range(steps - 1, -1, -1):
        at4, at2 = t * batch * g4 * isz, t * batch * 2 * hsz * isz
        c_prev = p_prev + at2 + hsz * isz
        step(p_act + at4, c_prev, 2 * hsz, p_tc + at2 // 2, p_g + at2, p_ch, p_cc, p_dg + at4, batch, hsz)
        np.matmul(dgates[t], wd, out=carry_h)
    return dgates, dgates, prev[:, :, :hsz], np.concatenate([carry_h, carry_c], axis=1)


def _sequence_by_steps(kind, reverse, relu, gi_all, state, w_hh, b_hh=None):
    """The same sequence as one recorded node per step (used for double backward)."""
    from ember.ops.movement import stack

    gis = gi_all.unbind(0)
    seq = [None] * len(gis)
    for t in range(len(gis) - 1, -1, -1) if reverse else range(len(gis)):
        if kind == "LSTM":
            state = lstm_step(gis[t], state, w_hh, b_hh)
        elif kind == "GRU":
            state = gru_step(gis[t], state, w_hh, b_hh)
        else:
            state = rnn_step(gis[t], state, w_hh, b_hh, "relu" if relu else "tanh")
        seq[t] = state
    return stack(seq, 0)


def recurrent_sequence(
    kind: str, gi_all: Tensor, state0: Tensor, w_hh: Tensor, b_hh, reverse: bool = False, relu: bool = False
) -> Tensor:
    """All states ``(T, B, S)`` of one recurrent direction given the projected inputs ``gi_all``."""
    t = apply(_SEQUENCE, gi_all, state0, w_hh, b_hh, kind=kind, reverse=reverse, relu=relu)
    node = t._node
    if isinstance(node, RecurrentSequence):  # not the physical movedim of a vmap batching rule
        node.save_versions(*(x for x in (gi_all, state0, w_hh, b_hh) if x is not None))
        if kind == "LSTM":  # backward reads the output array: guard it against in-place writes
            t._vc = [0]
            node.out_vc = t._vc
    return t


def _sequence_meta(gi_all, state0, w_hh, b_hh, kind, reverse, relu):
    shape = gi_all._data.shape[:1] + state0._data.shape
    return gi_all._device.backend.xp.empty(shape, state0._data.dtype), {"saved": None, "prev": None}


def _sequence_impl(gi_all, state0, w_hh, b_hh, kind, reverse, relu, k=None):
    """The states of every step, and what backward needs (gates, each step's starting state)."""
    gd, wd = gi_all._data, w_hh._data
    bd = None if b_hh is None else b_hh._data
    steps = gd.shape[0]
    state = state0._data
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    if kind == "LSTM":
        out, saved = _lstm_sequence_forward(gd, state, wd, bd, order, k)
        prev = out  # backward shifts the outputs by one step to get each step's starting state
    else:
        fwd = _KINDS[kind][1]
        out = np.empty((steps,) + state.shape, dtype=state.dtype)
        saved, prev = [None] * steps, [None] * steps
        for t in order:
            prev[t] = state
            state, saved[t] = fwd(gd[t], state, wd, bd, relu) if kind == "RNN" else fwd(gd[t], state, wd, bd)
            out[t] = state
    return out, {"saved": saved, "prev": prev}


_SEQUENCE = Primitive("recurrent_sequence", RecurrentSequence, _sequence_impl, extras=True)
_SEQUENCE.register("meta", _sequence_meta)


# --------------------------------------------------------------------------- sequences
def _project(x: Tensor, w_ih: Tensor, b_ih: Tensor | None) -> Tensor:
    """``x W_ih^T + b_ih`` for every time step at once: (T, B, I) -> (T, B, G).

    ``linear`` makes it one (T*B, I) @ (I, G) GEMM forward and one per gradient backward, also for
    the strided (time-major view of batch-first, or sliced ``[h | c]``) inputs an RNN layer gets."""
    from ember.nn.functional.linear import linear

    return linear(x, w_ih, b_ih)


def rnn_sequence(
    mode: str,
    x: Tensor,
    hx,
    weights: list,
    num_layers: int,
    bidirectional: bool,
    dropout: float,
    training: bool,
    nonlinearity: str = "tanh",
):
    """Run a (multi-layer, optionally bidirectional) RNN over a time-major ``(T, B, I)`` input.

    ``weights[layer * dirs + d]`` is ``(w_ih, w_hh, b_ih, b_hh)`` (biases may be None); ``hx`` is
    ``(L*dirs, B, H)`` (LSTM: a pair ``(h0, c0)``). Returns ``(output (T, B, dirs*H), h_n)`` with
    ``h_n`` a pair ``(h_n, c_n)`` for LSTM.
    """
    from ember.amp.policy import rnn_autocast

    (x, hx, weights), ctx = rnn_autocast(mode.lower(), x, hx, weights)
    with ctx:
        return _rnn_sequence(mode, x, hx, weights, num_layers, bidirectional, dropout, training, nonlinearity)


def _rnn_sequence(mode, x, hx, weights, num_layers, bidirectional, dropout, training, nonlinearity):
    from ember.ops.movement import cat, stack

    dirs = 2 if bidirectional else 1
    steps = x.shape[0]
    lstm = mode == "LSTM"
    h0, c0 = hx if lstm else (hx, None)
    finals_h, finals_c = [], []
    layer_in = x
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            w_ih, w_hh, b_ih, b_hh = weights[layer * dirs + d]
            hsz = w_hh.shape[1]
            gi_all = _project(layer_in, w_ih, b_ih)
            state = cat([h0[layer * dirs + d], c0[layer * dirs + d]], 1) if lstm else h0[layer * dirs + d]
            out = recurrent_sequence(mode, gi_all, state, w_hh, b_hh, reverse=d == 1, relu=nonlinearity == "relu")
            state = out[0] if d == 1 else out[steps - 1]
            if lstm:
                finals_h.append(state[:, :hsz])
                finals_c.append(state[:, hsz:])
                out = out[:, :, :hsz]
            else:
                finals_h.append(state)
            outs.append(out)
        layer_in = outs[0] if dirs == 1 else cat(outs, 2)
        if dropout > 0 and training and layer < num_layers - 1:
            from ember.nn.functional import dropout as _dropout

            layer_in = _dropout(layer_in, dropout, True)
    h_n = stack(finals_h, 0)
    if lstm:
        return layer_in, (h_n, stack(finals_c, 0))
    return layer_in, h_n
