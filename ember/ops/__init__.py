"""Ember's ops: primitives with gradient rules, and the compositions built on them.

Modules by kind: ``elementwise`` (unary/binary math), ``reduce`` (reductions and scans),
``movement`` (views, joins), ``index`` (indexing, gather/scatter, sort), ``linalg`` (matmul,
einsum), ``creation`` (factories), ``inplace`` (in-place variants).
"""
