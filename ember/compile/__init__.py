"""``ember.compile``: graph capture through the dispatch point, graph passes, elementwise fusion
and generated C (CPU) / CUDA source. See README.md in this folder for the pipeline and the
invariant of each pass.
"""

from ember.compile.api import RECOMPILE_LIMIT, CompiledFunction, CompileError, OptimizedModule, compile

__all__ = ["compile", "CompileError", "OptimizedModule", "CompiledFunction", "RECOMPILE_LIMIT"]
