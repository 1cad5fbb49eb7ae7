# ruff: noqa: F401 - this file re-exports the public API
"""``ember.nn.functional``: the functional form of every layer (``torch.nn.functional``).

Example:
    >>> import ember
    >>> import ember.nn.functional as F
    >>> F.relu(ember.tensor([-1.0, 2.0]))
    tensor([0., 2.])
"""

from ember.nn.functional.activation import (
    celu,
    elu,
    gelu,
    glu,
    hardsigmoid,
    hardswish,
    hardtanh,
    hardtanh_,
    leaky_relu,
    leaky_relu_,
    log_softmax,
    logsigmoid,
    mish,
    prelu,
    relu,
    relu6,
    relu_,
    selu,
    sigmoid,
    silu,
    softmax,
    softmin,
    softplus,
    softsign,
    tanh,
    tanhshrink,
    threshold,
)
from ember.nn.functional.linear import (
    alpha_dropout,
    bilinear,
    cosine_similarity,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    embedding,
    linear,
    normalize,
    one_hot,
    pad,
    pairwise_distance,
)
from ember.nn.functional.loss import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    nll_loss,
    smooth_l1_loss,
)
from ember.nn.functional.normalization import (
    batch_norm,
    group_norm,
    instance_norm,
    layer_norm,
    local_response_norm,
    rms_norm,
)

# ---- E2 (conv, pooling, attention, rnn): append imports below this line ----
# isort: split
from ember.nn.functional.attention import scaled_dot_product_attention
from ember.nn.functional.conv import conv1d, conv2d
from ember.nn.functional.pooling import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    avg_pool1d,
    avg_pool2d,
    max_pool1d,
    max_pool2d,
)

# ---- api-layers (issue 12) ----
# isort: split
from ember.nn.functional.conv_transpose import conv_transpose1d, conv_transpose2d
from ember.nn.functional.fold import fold, unfold
from ember.nn.functional.upsample import (
    interpolate,
    pixel_shuffle,
    pixel_unshuffle,
    upsample,
    upsample_bilinear,
    upsample_nearest,
)
