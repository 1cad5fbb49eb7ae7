"""Ember's ops: primitives with gradient rules, and the compositions built on them.

Modules by kind: ``elementwise`` (unary/binary math), ``reduce`` (reductions and scans),
``movement`` (views, joins), ``index`` (indexing, gather/scatter, sort), ``linalg`` (matmul,
einsum), ``creation`` (factories), ``inplace`` (in-place variants).
"""

# Tensor first: ember.tensor defines TensorBase (what the op modules import), then imports the op
# modules for Tensor's method mixins. Entering through here keeps that order.
import ember.tensor  # noqa: E402, F401
