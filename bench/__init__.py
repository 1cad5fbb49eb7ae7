"""Ember's benchmarks: workloads written in the PyTorch API, timed on ember and torch side by side.

``python -m bench.run`` runs them (see ``bench/run.py``); ``bench/harness.py`` holds the timing
and registration machinery; workload modules (``bench/micro.py``, ...) register cases. Nothing
here imports NumPy at package import, so the runner can set thread limits first.
"""
