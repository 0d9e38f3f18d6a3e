"""Benchmarks behind ``mmbal bench``: every number a ratio against a baseline run side by side in one process.

- :mod:`~orchestrator.bench.loader`: the prepared layout vs the per-sample loader, same workers (``loader_ratio``).
- :mod:`~orchestrator.bench.throughput`: a trial's step vs a plain PyTorch loop on the same model and batches
  (``step_ratio``), and the audio-visual ResNet-18 trial vs its model-only bound (``av_bench``).
"""
