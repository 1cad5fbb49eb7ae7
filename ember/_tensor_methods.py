"""The methods of :class:`ember.Tensor`, one mixin class per op family, written out by name.

``x.sum(1)`` is ``ember.sum(x, 1)``, ``x + y`` is ``ember.add(x, y)``, and each ``op_`` method is
the in-place form. Each method is a class attribute naming the op's function (not a wrapper), so
calling a method costs exactly what calling the function costs, and ``Tensor.exp``, ``dir``,
``help`` and static tools see every method. ``ember.tensor.Tensor`` inherits these classes; the
ops import the core class (``TensorBase``), which is why this module can import them first.

To give Tensor a new method, add one line to the class of its family.
"""

from __future__ import annotations

from ember._mutations import bump as _bump
from ember.ops import convert, creation, index, inplace, linalg, movement, reduce, special
from ember.ops import elementwise as ew
from ember.ops.inplace import _generic_inplace

__all__ = [
    "ArithmeticOps",
    "MathOps",
    "ReductionOps",
    "MovementOps",
    "IndexingOps",
    "InplaceOps",
    "ConversionOps",
]


class ArithmeticOps:
    """Python's operators: ``+ - * / // % ** @``, comparisons, bitwise ops, indexing, iteration."""

    __slots__ = ()
    # Forward operators are the functions themselves: no extra call on the hottest path.
    __add__ = ew.add
    __sub__ = ew.sub
    __mul__ = ew.mul
    __truediv__ = ew.div
    __floordiv__ = ew.floor_divide
    __mod__ = ew.remainder
    __pow__ = ew.pow
    __matmul__ = linalg.matmul
    __neg__ = ew.neg
    __abs__ = ew.abs
    __eq__ = ew.eq
    __ne__ = ew.ne
    __lt__ = ew.lt
    __le__ = ew.le
    __gt__ = ew.gt
    __ge__ = ew.ge
    __and__ = ew.bitwise_and
    __or__ = ew.bitwise_or
    __xor__ = ew.bitwise_xor
    __invert__ = ew.bitwise_not
    __getitem__ = index.getitem
    __setitem__ = inplace.setitem_method
    __iadd__ = inplace.add_
    __isub__ = inplace.sub_
    __imul__ = inplace.mul_
    __itruediv__ = inplace.div_
    __ipow__ = inplace.pow_

    def __radd__(self, other):
        return ew.add(other, self)

    def __rsub__(self, other):
        return ew.sub(other, self)

    def __rmul__(self, other):
        return ew.mul(other, self)

    def __rtruediv__(self, other):
        return ew.div(other, self)

    def __rfloordiv__(self, other):
        return ew.floor_divide(other, self)

    def __rmod__(self, other):
        return ew.remainder(other, self)

    def __rpow__(self, other):
        return ew.pow(other, self)

    def __rmatmul__(self, other):
        return linalg.matmul(other, self)

    def __rand__(self, other):
        return ew.bitwise_and(other, self)

    def __ror__(self, other):
        return ew.bitwise_or(other, self)

    def __rxor__(self, other):
        return ew.bitwise_xor(other, self)

    def __pos__(self):
        return self

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return iter(movement.unbind(self, 0))

    def __contains__(self, item) -> bool:
        return bool((self._data == (item._data if isinstance(item, ArithmeticOps) else item)).any())


class MathOps:
    """Elementwise math, comparisons and linear algebra: ``x.exp()`` is ``ember.exp(x)``."""

    __slots__ = ()
    add = ew.add
    sub = ew.sub
    mul = ew.mul
    div = ew.div
    true_divide = ew.true_divide
    pow = ew.pow
    neg = ew.neg
    negative = ew.negative
    exp = ew.exp
    log = ew.log
    log1p = ew.log1p
    expm1 = ew.expm1
    sqrt = ew.sqrt
    rsqrt = ew.rsqrt
    reciprocal = ew.reciprocal
    sin = ew.sin
    cos = ew.cos
    tan = ew.tan
    tanh = ew.tanh
    asin = ew.asin
    acos = ew.acos
    atan = ew.atan
    sinh = ew.sinh
    cosh = ew.cosh
    asinh = ew.asinh
    acosh = ew.acosh
    atanh = ew.atanh
    arcsin = ew.arcsin
    arccos = ew.arccos
    arctan = ew.arctan
    erf = ew.erf
    relu = ew.relu
    sigmoid = ew.sigmoid
    abs = ew.abs
    absolute = ew.absolute
    sign = ew.sign
    sgn = ew.sgn
    floor = ew.floor
    ceil = ew.ceil
    trunc = ew.trunc
    frac = ew.frac
    round = ew.round
    square = ew.square
    log2 = ew.log2
    log10 = ew.log10
    exp2 = ew.exp2
    logical_not = ew.logical_not
    logical_and = ew.logical_and
    logical_or = ew.logical_or
    logical_xor = ew.logical_xor
    bitwise_not = ew.bitwise_not
    bitwise_and = ew.bitwise_and
    bitwise_or = ew.bitwise_or
    bitwise_xor = ew.bitwise_xor
    isnan = ew.isnan
    isinf = ew.isinf
    isfinite = ew.isfinite
    signbit = ew.signbit
    nan_to_num = ew.nan_to_num
    clamp = ew.clamp
    clip = ew.clip
    clamp_min = ew.clamp_min
    clamp_max = ew.clamp_max
    maximum = ew.maximum
    minimum = ew.minimum
    atan2 = ew.atan2
    arctan2 = ew.arctan2
    remainder = ew.remainder
    fmod = ew.fmod
    floor_divide = ew.floor_divide
    eq = ew.eq
    ne = ew.ne
    lt = ew.lt
    le = ew.le
    gt = ew.gt
    ge = ew.ge
    greater = ew.greater
    greater_equal = ew.greater_equal
    less = ew.less
    less_equal = ew.less_equal
    not_equal = ew.not_equal
    equal = ew.equal
    allclose = ew.allclose
    isclose = ew.isclose
    lerp = ew.lerp
    addcmul = ew.addcmul
    addcdiv = ew.addcdiv
    rsub = ew.rsub
    matmul = linalg.matmul
    mm = linalg.mm
    bmm = linalg.bmm
    mv = linalg.mv
    dot = linalg.dot
    vdot = linalg.vdot
    inner = linalg.inner
    outer = linalg.outer
    ger = linalg.ger
    addmm = linalg.addmm
    baddbmm = linalg.baddbmm
    addmv = linalg.addmv
    bernoulli = creation.bernoulli
    lgamma = special.lgamma
    digamma = special.digamma

    def polygamma(self, n):
        """``ember.polygamma(n, self)``."""
        return special.polygamma(n, self)

    def where(self, condition, other):
        """``ember.where(condition, self, other)``."""
        return ew.where(condition, self, other)

    def softmax(self, dim, **kwargs):
        """``ember.softmax(self, dim)``."""
        from ember.nn.functional import softmax

        return softmax(self, dim, **kwargs)

    def log_softmax(self, dim, **kwargs):
        """``ember.log_softmax(self, dim)``."""
        from ember.nn.functional import log_softmax

        return log_softmax(self, dim, **kwargs)


class ReductionOps:
    """Reductions and scans: ``x.sum(1)`` is ``ember.sum(x, 1)``."""

    __slots__ = ()
    sum = reduce.sum
    nansum = reduce.nansum
    mean = reduce.mean
    nanmean = reduce.nanmean
    var = reduce.var
    std = reduce.std
    prod = reduce.prod
    amax = reduce.amax
    amin = reduce.amin
    argmax = reduce.argmax
    argmin = reduce.argmin
    max = reduce.max
    min = reduce.min
    aminmax = reduce.aminmax
    logsumexp = reduce.logsumexp
    norm = reduce.norm
    any = reduce.any
    all = reduce.all
    count_nonzero = reduce.count_nonzero
    cumsum = reduce.cumsum
    cumprod = reduce.cumprod
    cummax = reduce.cummax


def _inplace_view(fn):
    """``t_``, ``squeeze_``, ``unsqueeze_``: self becomes ``fn(self)``, history included."""

    def method(self, *args):
        from ember.autograd.grad_mode import state
        from ember.tensor import Tensor

        if self._requires_grad and state.enabled:
            if self._node is None:
                raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
            # The op's node must see self as it was: record it on a stand-in with the old
            # array and history, then take over the result's array and node.
            old = Tensor.__new__(Tensor)
            old.__dict__.update(self.__dict__)
            res = fn(old, *args)
            self._node = res._node
            if self._base is not None:
                self._view_of = res._view_of
        else:
            res = fn(self, *args)
        _bump()  # a new array: compiled steps' guards (ember/_mutations.py)
        self._data = res._data
        return self

    method.__name__ = method.__qualname__ = fn.__name__ + "_"
    method.__doc__ = f"In-place ``{fn.__name__}``: changes this tensor's shape; returns self."
    return method


class MovementOps:
    """Views, reshapes and joins: ``x.view(2, 3)``, ``x.T``, ``x.transpose_(0, 1)``."""

    __slots__ = ()
    reshape = movement.reshape
    view = movement.view
    view_as = movement.view_as
    reshape_as = movement.reshape_as
    flatten = movement.flatten
    unflatten = movement.unflatten
    squeeze = movement.squeeze
    unsqueeze = movement.unsqueeze
    permute = movement.permute
    transpose = movement.transpose
    swapaxes = movement.swapaxes
    swapdims = movement.swapdims
    t = movement.t
    adjoint = movement.adjoint
    movedim = movement.movedim
    moveaxis = movement.moveaxis
    expand = movement.expand
    expand_as = movement.expand_as
    broadcast_to = movement.broadcast_to
    repeat = movement.repeat
    tile = movement.tile
    repeat_interleave = movement.repeat_interleave
    contiguous = movement.contiguous
    clone = movement.clone
    narrow = movement.narrow
    select = movement.select
    split = movement.split
    chunk = movement.chunk
    tensor_split = movement.tensor_split
    unbind = movement.unbind
    flip = movement.flip
    fliplr = movement.fliplr
    flipud = movement.flipud
    roll = movement.roll
    tril = movement.tril
    triu = movement.triu
    diagonal = movement.diagonal
    diag = movement.diag
    diag_embed = movement.diag_embed
    trace = movement.trace
    t_ = _inplace_view(movement.t)
    squeeze_ = _inplace_view(movement.squeeze)
    unsqueeze_ = _inplace_view(movement.unsqueeze)
    transpose_ = _inplace_view(movement.transpose)

    @property
    def T(self):
        """All dims reversed."""
        return movement.permute(self, tuple(reversed(range(self._data.ndim))))

    @property
    def mT(self):
        """The last two dims swapped."""
        return movement.transpose(self, -2, -1)

    mH = mT

    @property
    def H(self):
        """The conjugate transpose of a matrix (real tensors: the transpose)."""
        return movement.t(self)

    @property
    def real(self):
        """The real part (tensors are real: self)."""
        return self


class IndexingOps:
    """Gather, scatter, masks, sorting: ``x.gather(1, idx)``, ``x.topk(3)``."""

    __slots__ = ()
    gather = index.gather
    take_along_dim = index.take_along_dim
    take = index.take
    scatter = index.scatter
    scatter_add = index.scatter_add
    scatter_reduce = index.scatter_reduce
    index_select = index.index_select
    index_add = index.index_add
    index_copy = index.index_copy
    index_fill = index.index_fill
    index_put = index.index_put
    masked_fill = index.masked_fill
    masked_select = index.masked_select
    masked_scatter = index.masked_scatter
    argsort = index.argsort
    sort = index.sort
    msort = index.msort
    topk = index.topk
    kthvalue = index.kthvalue
    median = index.median
    nonzero = index.nonzero
    argwhere = index.argwhere
    unique = index.unique
    bincount = index.bincount


class InplaceOps:
    """In-place updates: ``x.add_(y)``, ``x.exp_()``, ``x.normal_()``; each returns self."""

    __slots__ = ()
    add_ = inplace.add_
    sub_ = inplace.sub_
    mul_ = inplace.mul_
    div_ = inplace.div_
    true_divide_ = inplace.div_
    pow_ = inplace.pow_
    zero_ = inplace.zero_
    fill_ = inplace.fill_
    copy_ = inplace.copy_
    index_add_ = inplace.index_add_
    uniform_ = inplace.uniform_
    normal_ = inplace.normal_
    bernoulli_ = inplace.bernoulli_
    exponential_ = inplace.exponential_
    random_ = inplace.random_
    geometric_ = inplace.geometric_
    log_normal_ = inplace.log_normal_
    cauchy_ = inplace.cauchy_
    # The in-place form of an out-of-place op: computed out of place, written back.
    exp_ = _generic_inplace(ew.exp, "exp_")
    log_ = _generic_inplace(ew.log, "log_")
    log1p_ = _generic_inplace(ew.log1p, "log1p_")
    expm1_ = _generic_inplace(ew.expm1, "expm1_")
    sqrt_ = inplace.sqrt_  # a direct path for optimizer updates
    rsqrt_ = _generic_inplace(ew.rsqrt, "rsqrt_")
    reciprocal_ = _generic_inplace(ew.reciprocal, "reciprocal_")
    sin_ = _generic_inplace(ew.sin, "sin_")
    cos_ = _generic_inplace(ew.cos, "cos_")
    tan_ = _generic_inplace(ew.tan, "tan_")
    tanh_ = _generic_inplace(ew.tanh, "tanh_")
    sigmoid_ = _generic_inplace(ew.sigmoid, "sigmoid_")
    relu_ = _generic_inplace(ew.relu, "relu_")
    abs_ = _generic_inplace(ew.abs, "abs_")
    neg_ = _generic_inplace(ew.neg, "neg_")
    sign_ = _generic_inplace(ew.sign, "sign_")
    floor_ = _generic_inplace(ew.floor, "floor_")
    ceil_ = _generic_inplace(ew.ceil, "ceil_")
    trunc_ = _generic_inplace(ew.trunc, "trunc_")
    round_ = _generic_inplace(ew.round, "round_")
    clamp_ = _generic_inplace(ew.clamp, "clamp_")
    clamp_min_ = _generic_inplace(ew.clamp_min, "clamp_min_")
    clamp_max_ = _generic_inplace(ew.clamp_max, "clamp_max_")
    square_ = _generic_inplace(ew.square, "square_")
    lerp_ = inplace.lerp_  # a direct path for optimizer updates
    addcmul_ = inplace.addcmul_  # a direct path for optimizer updates
    addcdiv_ = inplace.addcdiv_  # a direct path for optimizer updates
    remainder_ = _generic_inplace(ew.remainder, "remainder_")
    fmod_ = _generic_inplace(ew.fmod, "fmod_")
    floor_divide_ = _generic_inplace(ew.floor_divide, "floor_divide_")
    atan2_ = _generic_inplace(ew.atan2, "atan2_")
    erf_ = _generic_inplace(ew.erf, "erf_")
    maximum_ = inplace.maximum_  # a direct path for optimizer updates
    minimum_ = _generic_inplace(ew.minimum, "minimum_")
    logical_not_ = _generic_inplace(ew.logical_not, "logical_not_")
    logical_and_ = _generic_inplace(ew.logical_and, "logical_and_")
    logical_or_ = _generic_inplace(ew.logical_or, "logical_or_")
    masked_fill_ = _generic_inplace(index.masked_fill, "masked_fill_")
    index_copy_ = _generic_inplace(index.index_copy, "index_copy_")
    index_fill_ = _generic_inplace(index.index_fill, "index_fill_")
    index_put_ = _generic_inplace(index.index_put, "index_put_")
    scatter_ = _generic_inplace(index.scatter, "scatter_")
    scatter_add_ = _generic_inplace(index.scatter_add, "scatter_add_")
    masked_scatter_ = _generic_inplace(index.masked_scatter, "masked_scatter_")
    tril_ = _generic_inplace(movement.tril, "tril_")
    triu_ = _generic_inplace(movement.triu, "triu_")
    clip_ = clamp_

    def resize_(self, *size):
        """Give this tensor a new shape (its values become zeros)."""
        _bump()
        self._data = creation.zeros(*size, dtype=self.dtype)._data
        return self

    def apply_(self, fn):
        """Replace each element ``x`` with ``fn(x)`` (a Python function; slow, as in PyTorch)."""
        flat = self._data.reshape(-1)
        for i in range(flat.size):
            flat[i] = fn(flat[i].item())
        return self

    def map_(self, other, fn):
        """Replace each element ``x`` with ``fn(x, y)``, ``y`` the matching element of ``other``."""
        res = creation.tensor([fn(a, b) for a, b in zip(self.tolist(), other.tolist())], dtype=self.dtype)
        _bump()
        self._data = res._data
        return self


class ConversionOps:
    """Dtype and device conversions and new tensors like this one: ``x.float()``, ``x.new_zeros(3)``."""

    __slots__ = ()
    to = convert.to
    cpu = convert.cpu
    cuda = convert.cuda
    type_as = convert.type_as
    double = convert.double
    half = convert.half
    bfloat16 = convert.bfloat16
    long = convert.long
    short = convert.short
    char = convert.char
    byte = convert.byte
    float = convert.float_
    int = convert.int_
    bool = convert.bool_
    is_sparse = False  # ember.sparse.SparseCOOTensor says True

    @property
    def layout(self):
        """``ember.strided``: a dense tensor's layout (ember.sparse tensors answer ``sparse_coo``)."""
        from ember.sparse.coo import strided

        return strided

    def to_sparse(self, sparse_dim=None, *, layout=None, blocksize=None, dense_dim=None):
        """This tensor as a sparse COO tensor (see :func:`ember.sparse.coo.to_sparse`)."""
        from ember.sparse.coo import to_sparse

        return to_sparse(self, sparse_dim, layout=layout, blocksize=blocksize, dense_dim=dense_dim)

    def to_sparse_coo(self):
        """This tensor as a sparse COO tensor."""
        from ember.sparse.coo import to_sparse

        return to_sparse(self)

    def to_dense(self, dtype=None, *, masked_grad=None):
        """A dense tensor is its own dense form (converted to ``dtype`` if given)."""
        return self if dtype is None else self.to(dtype)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        """Zeros with this tensor's dtype and device unless given."""
        return creation.zeros(
            *size, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad
        )

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        """Ones with this tensor's dtype and device unless given."""
        return creation.ones(
            *size, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad
        )

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        """An uninitialized tensor with this tensor's dtype and device unless given."""
        return creation.empty(
            *size, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad
        )

    def new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad=False):
        """``fill_value`` everywhere, with this tensor's dtype and device unless given."""
        return creation.full(
            size, fill_value, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad
        )

    def new_tensor(self, data, *, dtype=None, device=None, requires_grad=False):
        """A tensor of ``data``, with this tensor's dtype and device unless given."""
        return creation.tensor(
            data, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad
        )
