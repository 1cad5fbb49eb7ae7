"""Ember: a complete, readable machine-learning system with PyTorch's API.

``import ember as torch`` runs ordinary PyTorch tensor code: tensors record the computational
graph, ``backward()`` differentiates through it, and every layer of the stack lives in its own
sub-package (see the README for the tour).

Example:
    >>> import ember as torch
    >>> x1 = torch.tensor(2.0, requires_grad=True)
    >>> x2 = torch.tensor(5.0, requires_grad=True)
    >>> y = torch.log(x1) + x1 * x2 - torch.sin(x2)
    >>> y.backward()
    >>> round(x1.grad.item(), 4), round(x2.grad.item(), 4)
    (5.5, 1.7163)
"""

from __future__ import annotations

from ember import (  # noqa: F401
    autograd,
    backends,
    cuda,
    random,
)
from ember._device import device
from ember._dtype import (
    bool_ as bool,
)
from ember._dtype import (
    dtype,
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    promote_types,
    uint8,
)
from ember._finfo import finfo, iinfo
from ember.autograd.grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from ember.ops.bucketing import bucketize, histc, searchsorted
from ember.ops.cdist import cdist
from ember.ops.convert import to as _to  # noqa: F401
from ember.ops.creation import (
    arange,
    as_tensor,
    asarray,
    bernoulli,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    logspace,
    multinomial,
    normal,
    ones,
    ones_like,
    poisson,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from ember.ops.elementwise import *  # noqa: F403 - the elementwise namespace is public API
from ember.ops.elementwise import abs, pow, round  # noqa: A004 - PyTorch's names
from ember.ops.index import (
    argsort,
    argwhere,
    bincount,
    gather,
    index_add,
    index_copy,
    index_fill,
    index_put,
    index_select,
    kthvalue,
    masked_fill,
    masked_scatter,
    masked_select,
    median,
    msort,
    nonzero,
    scatter,
    scatter_add,
    scatter_reduce,
    sort,
    take,
    take_along_dim,
    topk,
    unique,
)
from ember.ops.linalg import (
    addmm,
    addmv,
    baddbmm,
    bmm,
    dot,
    einsum,
    ger,
    inner,
    matmul,
    mm,
    mv,
    outer,
    tensordot,
    vdot,
)
from ember.ops.movement import (
    adjoint,
    atleast_1d,
    atleast_2d,
    broadcast_shapes,
    broadcast_tensors,
    broadcast_to,
    cat,
    chunk,
    clone,
    concat,
    concatenate,
    diag,
    diag_embed,
    diagonal,
    flatten,
    flip,
    fliplr,
    flipud,
    hstack,
    moveaxis,
    movedim,
    narrow,
    permute,
    repeat_interleave,
    reshape,
    roll,
    select,
    split,
    squeeze,
    stack,
    swapaxes,
    swapdims,
    t,
    tensor_split,
    tile,
    trace,
    transpose,
    tril,
    triu,
    unbind,
    unflatten,
    unsqueeze,
    vstack,
)
from ember.ops.products import block_diag, cartesian_prod, combinations, kron, meshgrid
from ember.ops.reduce import (
    all,
    amax,
    amin,
    aminmax,
    any,
    argmax,
    argmin,
    count_nonzero,
    cummax,
    cumprod,
    cumsum,
    logsumexp,
    max,
    mean,
    min,
    nanmean,
    nansum,
    norm,
    prod,
    std,
    std_mean,
    sum,
    var,
    var_mean,
)
from ember.ops.special import digamma, lgamma, polygamma
from ember.random import Generator, get_rng_state, initial_seed, manual_seed, seed, set_rng_state
from ember.tensor import Size, Tensor

__version__ = "0.1.0"

# PyTorch's dtype aliases.
float = float32  # noqa: A001
double = float64
half = float16
from ember._dtype import bfloat16  # noqa: E402 - needs ml_dtypes; PyTorch's name

long = int64
int = int32  # noqa: A001
short = int16
bool_ = bool
strided = "strided"
contiguous_format = preserve_format = "contiguous_format"


def is_tensor(obj):
    """True when ``obj`` is an Ember tensor."""
    return isinstance(obj, Tensor)


def numel(input: Tensor):
    return input.numel()


def is_floating_point(input: Tensor):
    return input.is_floating_point()


def set_default_dtype(d) -> None:
    """Make ``d`` (float32 or float64) the dtype of Python floats and float factories."""
    from ember import _dtype

    d = _dtype.to_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"only floating-point types are supported as the default type (got {d})")
    _dtype.defaults.float = d


def get_default_dtype():
    from ember import _dtype

    return _dtype.defaults.float


def result_type(tensor1, tensor2):
    from ember import _dtype

    return _dtype.result_type(tensor1, tensor2)


def can_cast(from_, to):
    return from_.category <= to.category


def set_num_threads(n: int) -> None:
    """Limit the threads of BLAS (through threadpoolctl when installed) and of Ember's C kernels.

    Example:
        >>> import ember
        >>> ember.set_num_threads(1)
        >>> ember.get_num_threads()
        1
    """
    from ember import _threads

    _threads.set_num_threads(n)


def get_num_threads():
    """The thread limit: ``set_num_threads``'s value, else ``OMP_NUM_THREADS``, else the usable cores."""
    from ember import _threads

    return _threads.get_num_threads()


# Sub-packages of the higher layers, available as attributes like torch.optim.
from ember import (  # noqa: E402
    accelerator,
    amp,
    cpu,
    datasets,
    distributed,
    distributions,
    linalg,
    nn,
    onnx,
    optim,
    profiler,
    utils,
    viz,
)
from ember._flags import (  # noqa: E402 - PyTorch's precision / determinism switches (stored, no effect)
    are_deterministic_algorithms_enabled,
    get_float32_matmul_precision,
    is_deterministic_algorithms_warn_only_enabled,
    set_float32_matmul_precision,
    use_deterministic_algorithms,
)
from ember._legacy_tensors import (  # noqa: E402 - PyTorch's typed constructors
    BFloat16Tensor,
    BoolTensor,
    ByteTensor,
    CharTensor,
    DoubleTensor,
    FloatTensor,
    HalfTensor,
    IntTensor,
    LongTensor,
    ShortTensor,
    set_default_tensor_type,
)
from ember.amp import autocast, get_autocast_dtype, is_autocast_enabled, set_autocast_enabled  # noqa: E402
from ember.backends import cpu_kernels as _cpu_kernels  # noqa: E402, F401 - the C kernels as cpu implementations
from ember.compile import compile  # noqa: E402, A004 - PyTorch's name

# PyTorch also exposes these two functional ops at the top level and as Tensor methods.
from ember.nn.functional import log_softmax, softmax  # noqa: E402

# Multi-tensor and fused optimizer ops, as torch._foreach_add_ and torch._fused_adam_.
from ember.ops.foreach import *  # noqa: E402, F403
from ember.ops.fused import *  # noqa: E402, F403
from ember.serialization import load, save  # noqa: E402

# isort: split
# Sparse COO tensors (ember.sparse): these layouts replace the placeholder string `strided` above.
from ember import sparse  # noqa: E402
from ember.sparse import layout, sparse_coo, sparse_coo_tensor, spmm, strided  # noqa: E402, F811
