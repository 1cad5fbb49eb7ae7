"""The fast call path of a whole-step program (``step_program.attach``): Python per call in tens of
microseconds, whatever the number of tensors (a few microseconds with warm caches).

A step program with no eager node runs here instead of ``Program.run`` and ``StepEntry.run``:

- **inputs**: the guarded tensors' arrays come from the guard check (``StepEntry.checked``, the
  list ``effects.FastGuards`` keeps while nothing changed); the pointer table is refilled only
  when that list is a new one, slot by slot where an array changed. Arguments and read ``.grad``
  arrays are set per call.
- **outputs reused when nothing can see them**: the program's outputs (new gradients, the loss)
  are fresh arrays per call in eager. An output tensor of the last call is reused (same array,
  pointer already in the table) only when nothing but its ``p.grad`` holds it: its reference
  count, its array's, no weak reference other than ours, no attribute set on it, and each
  ``p.grad`` it was written to still is it. That ``p.grad`` is then set to the new gradient by
  the writeback anyway, so eager would have dropped the old object: nobody can tell the
  difference. A tensor a user holds (``g = p.grad``, a returned loss kept in a variable, a view
  or NumPy array of it) is left alone and a new array is made, as eager does. The cache holds
  outputs by weak reference only, so it keeps no memory alive. These counts are read only when
  something may have changed (``ember/_mutations.py``): while ``MUTATIONS`` (no ``.grad`` or
  array rebound), ``GRAD_READS`` (no ``.grad`` read: the public way to reach a gradient) and
  ``_WRITER`` (no other step wrote ``.grad``) are as this step left them, and it returns none
  of its gradients, nothing is read at all; while only ``GRAD_READS`` moved, the counts are read
  but not the ``.grad`` of each parameter.
- **writebacks**: a reused gradient is already ``p.grad``; the rest are set as ``StepEntry.run``
  does, without advancing ``MUTATIONS`` where they keep the graph's guards
  (``effects.keeps_guards``).

Example:
    >>> from ember.compile.step_run import FastStep  # attached by step_program.attach
"""

from __future__ import annotations

import ctypes
import itertools
import sys
import weakref
from operator import attrgetter, is_

import numpy as np

from ember._mutations import GRAD_READS, MUTATIONS
from ember.compile.capture import unflatten
from ember.compile.effects import keeps_guards, write_back
from ember.compile.ir import Node
from ember.tensor import Tensor

__all__ = ["FastStep", "fast_step"]

_DATA = attrgetter("_data")
_GRAD = attrgetter("_grad")
_rc = sys.getrefcount
_call = weakref.ref.__call__
_nrefs = weakref.getweakrefcount
_NoneType = type(None)


def _wrap(arr) -> Tensor:
    t = Tensor.__new__(Tensor)
    t._data = arr
    return t


def _unshared(_ref) -> None:
    """The callback of our weak references: with one, ``weakref.ref`` never hands a user our
    reference object, so a user's weak reference counts (``getweakrefcount``)."""


def _probe() -> tuple:
    """The reference counts :meth:`FastStep._outputs` and its slow path see for an output held by nothing but
    the structures it uses itself (one more per ``p.grad`` holding it): measured, not assumed,
    so they follow the interpreter's own counting."""
    t = _wrap(np.empty(1))
    arrs = [t._data]  # Program.arrs
    kept = [t._data]  # FastStep.arrays
    ref = weakref.ref(t, _unshared)
    refs = [ref]
    del ref
    holder = [t]  # stands for one p.grad
    del t
    ts = list(map(_call, refs))
    direct = list(map(_rc, kept))[0]  # the arrays read from FastStep.arrays
    datas = list(map(_DATA, ts))  # ... or through the tensors
    counts = (list(map(_rc, ts))[0] - 1, list(map(_rc, datas))[0], direct)
    del holder, arrs, kept
    return counts


_BASE_T, _BASE_A, _BASE_DIRECT = _probe()


class _Gone:
    pass


_DEAD = weakref.ref(_Gone())  # a reference whose object is gone: no output yet
_TOKENS = itertools.count(1)  # one per FastStep
_WRITER = [0]  # the token of the FastStep that wrote .grad last (its writes may not count)


def fast_step(entry, program):
    """A :class:`FastStep` for ``entry``'s program, or None where the program needs the general
    path (an op runs eagerly between segments, a result aliases another value)."""
    if program.spec.eager_nodes or program.others or any(fn is None for fn, _ in program.plan):
        return None
    g = entry.graph
    slot_of = {node: j for j, (_k, node, _s, _d) in enumerate(program.spec.outputs)}
    refs = g.outputs[: g.n_ret + sum(1 for w in entry.traced.writebacks if w[-1] is None or w[-1][0] != "python")]
    for o in refs:
        if isinstance(o, Node) and o not in slot_of and o.kind != "placeholder":
            return None
    return FastStep(entry, program, slot_of)


class FastStep:
    """See the module docstring; ``run(entry, arg_tensors)`` replaces ``StepEntry.run``."""

    def __init__(self, entry, program, slot_of):
        self.prog = program
        spec = program.spec
        consts = entry.fast_guards.tensors
        index = {id(t): i for i, t in enumerate(consts)}
        self.const_in, self.arg_in, self.grad_in = [], [], []
        written = {k for k, _ in spec.written_inputs}
        for k, node, dt in spec.inputs:
            kind, ref = node.binding
            w = k in written
            if kind == "const":
                self.const_in.append((k, index[id(ref)], dt, w))
            elif kind == "arg":
                self.arg_in.append((k, ref, dt, w))
            else:  # "grad": the parameter whose .grad the step reads
                self.grad_in.append((k, ref, dt, w))
        self.datas = None  # the guarded arrays the pointer table was filled from
        self.copies: list = []  # (slot, guarded index, dtype, written) of inputs copied to be contiguous
        self.outputs = [(k, shape, dt) for k, _node, shape, dt in spec.outputs]

        def source(o):
            if isinstance(o, Node):
                if o in slot_of:
                    return ("out", slot_of[o])
                return ("input", o.binding)
            return ("value", None) if o[0] == "none" else ("arg", o[1]) if o[0] == "arg" else ("value", o[1])

        g = entry.graph
        self.returns = [source(o) for o in g.outputs[: g.n_ret]]
        self.out_spec = entry.traced.out_spec
        self.constant = self.out_spec[0] == "C"
        self.P_addr = ctypes.addressof(program.P)
        # writebacks: gradients whose value is an output (skipped when reused), then the rest
        self.grad_wb: list = []  # (parameter, output index)
        self.other_wb: list = []  # (writeback, source)
        k = g.n_ret
        for w in entry.traced.writebacks:
            ref = w[-1]
            if ref is not None and ref[0] == "python":
                src = ("value", ref[1])
            else:
                src = source(g.outputs[k])
                k += 1
            if w[0] == "grad" and src[0] == "out":
                self.grad_wb.append((w[1], src[1]))
            else:
                self.other_wb.append((w, src))
        self.wb_params = [p for p, _ in self.grad_wb]
        holders = [0] * len(self.outputs)  # how many p.grad each output is written to
        for _p, j in self.grad_wb:
            holders[j] += 1
        self.reused = [j for j, h in enumerate(holders) if h]  # outputs that may be reused
        self.always = [j for j, h in enumerate(holders) if not h]  # new arrays every call
        self.refs = [_DEAD] * len(self.reused)  # weak references to the last call's tensors
        self.arrays = [None] * len(self.reused)  # ... and their arrays (which arrs holds too)
        self.expect_t = [_BASE_T + holders[j] for j in self.reused]
        self.expect_a = [_BASE_A] * len(self.reused)
        self.expect_direct = [_BASE_DIRECT] * len(self.reused)
        self.ones = [1] * len(self.reused)
        self.last_grads: list = []  # ids of the tensors last written to wb_params' .grad
        # writebacks that leave this graph's guards as they were need not advance MUTATIONS
        self.quiet = keeps_guards(entry.traced.writebacks, entry.guards, [p for p, _, _ in entry.grad_reads])
        self.new_arrays = 0  # output arrays made (the rest were reused)
        self.token = next(_TOKENS)
        self.wb_epoch = None  # MUTATIONS[0] after this step's last writeback
        self.reads_epoch = None  # GRAD_READS[0] then
        # Whether the call hands none of the reusable outputs to anyone but their p.grad (no
        # result and no other writeback is one, or a .grad the graph reads).
        reusable = set(self.reused)

        def hands_out(src) -> bool:
            kind, x = src
            return (kind == "out" and x in reusable) or (kind == "input" and x[0] == "grad")

        self.unseen = not any(map(hands_out, self.returns + [src for _w, src in self.other_wb]))

    # ----- inputs
    def _set_inputs(self, datas, arg_tensors) -> list:
        prog = self.prog
        P, arrs = prog.P, prog.arrs
        if datas is not self.datas:
            copies = []
            for k, i, dt, w in self.const_in:
                a = datas[i]
                if a.dtype != dt or not a.flags.c_contiguous:
                    copies.append((k, i, dt, w))
                elif a is not arrs[k]:
                    arrs[k] = a
                    P[k] = a.ctypes.data
            self.copies = copies
            self.datas = datas
        back = []
        for k, i, dt, w in self.copies:  # copied again every call: the source may have changed
            self._set(P, arrs, k, datas[i], dt, w, back)
        for k, i, dt, w in self.arg_in:
            self._set(P, arrs, k, arg_tensors[i]._data, dt, w, back)
        for k, p, dt, w in self.grad_in:
            self._set(P, arrs, k, p._grad._data, dt, w, back)
        return back

    @staticmethod
    def _set(P, arrs, k, a, dt, written, back) -> None:
        if a is arrs[k]:
            return
        if a.dtype != dt or not a.flags.c_contiguous:
            c = np.ascontiguousarray(a, dt)
            if written:
                back.append((a, c))
            a = c
        arrs[k] = a
        P[k] = a.ctypes.data

    # ----- outputs
    def _outputs(self) -> tuple:
        """``(tensors, changed)``: this call's output tensors, and whether a reusable one is new
        (its ``p.grad`` must be set). Outputs no ``p.grad`` is set to (a returned loss) are new
        every call: one still alive is the user's."""
        if (
            self.unseen
            and _WRITER[0] == self.token
            and MUTATIONS[0] == self.wb_epoch
            and GRAD_READS[0] == self.reads_epoch
        ):
            # Since this step's last writeback nothing rebound a .grad or an array (each such
            # write counts), no other step wrote .grad, and no .grad was read (the only public way
            # to reach these tensors; the step returns none of them): each is still only its
            # p.grad's, with its own array. Nothing to read.
            if not self.always:
                return None, False
            kept, bad = None, ()
        else:
            kept, bad = self._kept()
            if not bad and not self.always:
                return kept, False
        ts = [None] * len(self.outputs)
        if kept is not None:
            for i, j in enumerate(self.reused):
                ts[j] = kept[i]
        P, arrs = self.prog.P, self.prog.arrs
        made = self.always + [self.reused[i] for i in bad]
        self.new_arrays += len(made)
        for j in made:
            k, shape, dt = self.outputs[j]
            a = np.empty(shape, dt)
            arrs[k] = a
            P[k] = a.ctypes.data
            ts[j] = _wrap(a)
        for i in bad:
            t = ts[self.reused[i]]
            self.refs[i] = weakref.ref(t, _unshared)
            self.arrays[i] = t._data
        return ts, bool(bad)

    def _kept(self) -> tuple:
        """``(tensors, positions)``: the last call's tensors of the reusable outputs, and the
        positions of those that need a new array."""
        kept = list(map(_call, self.refs))
        bad = None
        if _NoneType in map(type, kept):  # (`in` would compare tensors with ==)
            pass
        elif _WRITER[0] == self.token and MUTATIONS[0] == self.wb_epoch:
            # Nothing rebound a .grad or an array since this step's last writeback (each such
            # write counts, and no other step wrote since): each p.grad is still its tensor, each
            # tensor's _data its array (read from the table, not through the tensor).
            if (
                list(map(_rc, kept)) == self.expect_t
                and list(map(_rc, self.arrays)) == self.expect_direct
                and list(map(_nrefs, kept)) == self.ones
                and list(map(len, map(vars, kept))) == self.ones
            ):
                bad = ()
        else:
            datas = list(map(_DATA, kept))
            if (
                list(map(_rc, kept)) == self.expect_t
                and list(map(_rc, datas)) == self.expect_a
                and False not in map(is_, datas, self.arrays)
                and list(map(_nrefs, kept)) == self.ones
                and list(map(len, map(vars, kept))) == self.ones
                and list(map(id, map(_GRAD, self.wb_params))) == self.last_grads
            ):
                bad = ()
            del datas
        if bad is None:
            bad = self._not_free(kept)
        return kept, bad

    def _not_free(self, kept) -> list:
        """Positions in ``kept`` that need a new array: no tensor left from the last call, or one
        that something besides its ``p.grad`` holds (the counts of the vectorized check in
        :meth:`_outputs`, one by one)."""
        datas = [None if t is None else t._data for t in kept]
        rc_t, rc_a = list(map(_rc, kept)), list(map(_rc, datas))
        grads = list(map(_GRAD, self.wb_params))
        out = []
        for i, t in enumerate(kept):
            ok = (
                t is not None
                and rc_t[i] == self.expect_t[i]
                and rc_a[i] == self.expect_a[i]
                and datas[i] is self.arrays[i]
                and _nrefs(t) == 1
                and len(vars(t)) == 1
            )
            if ok:
                j = self.reused[i]
                ok = all(g is t for g, (_p, jj) in zip(grads, self.grad_wb) if jj == j)
            if not ok:
                out.append(i)
        return out

    def run(self, entry, arg_tensors: list, general):
        """One call; ``general(arg_tensors)`` is the program's general path (``Program.run``)."""
        datas = entry.checked
        entry.checked = None
        if datas is None:  # no guard check this call (the first, right after compiling)
            if not entry.fast_guards.check():
                self.datas = None  # the general path sets every pointer from the tensors
                self.refs = [_DEAD] * len(self.reused)
                self.arrays = [None] * len(self.reused)
                self.wb_epoch = None
                return general(arg_tensors)
            datas = entry.fast_guards.datas
        if datas is not self.datas or self.copies or self.arg_in or self.grad_in:
            back = self._set_inputs(datas, arg_tensors)
        else:
            back = ()
        ts, changed = self._outputs()
        P = self.P_addr  # (an int: ctypes converts it faster than the array)
        for fn, _x in self.prog.plan:
            if fn(P):
                raise IndexError("index out of range in self")
        for a, c in back:  # an input copied to be contiguous and written in place
            np.copyto(a, c)
        if changed:
            for p, j in self.grad_wb:
                p._grad = ts[j]
            if not self.quiet:
                MUTATIONS[0] += 1
            self.last_grads = list(map(id, map(_GRAD, self.wb_params)))
        for w, src in self.other_wb:
            value = self._value(src, ts, arg_tensors)
            write_back(w, value, self.quiet)
        # each written p.grad is ours now, nobody has read one since
        _WRITER[0], self.wb_epoch, self.reads_epoch = self.token, MUTATIONS[0], GRAD_READS[0]
        if self.constant:  # the function returns no tensor (a training step returning None)
            return self.out_spec[1]
        outs = [self._value(src, ts, arg_tensors) for src in self.returns]
        return unflatten(self.out_spec, outs)

    @staticmethod
    def _value(src, ts, arg_tensors):
        kind, x = src
        if kind == "out":
            return ts[x]
        if kind == "arg":
            return arg_tensors[x]
        if kind == "input":
            k, ref = x
            return arg_tensors[ref] if k == "arg" else ref._grad if k == "grad" else ref
        return x
