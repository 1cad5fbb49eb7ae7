"""Source renderers for fused groups: ``cstyle`` (shared), ``c`` (CPU) and ``cuda``."""

from ember.compile.codegen.c import CRenderer
from ember.compile.codegen.cuda import CudaRenderer

__all__ = ["CRenderer", "CudaRenderer"]
