"""How a checked sweep runs: the driver and its three execution modes.

- :mod:`~orchestrator.run.driver`: the entry point (``run_sweep``): results folder, Ray start,
  mode choice, the end-of-sweep leaderboard.
- :mod:`~orchestrator.run.local`: ``execution.mode: local``, trials one after another, no Ray.
- :mod:`~orchestrator.run.tuner`: ``packed`` and ``ddp``, one Ray Tune run over the trials.
- :mod:`~orchestrator.run.packed` / :mod:`~orchestrator.run.ddp`: the two Tune function
  trainables (``packed_trainable``, ``ddp_trainable``), side by side; what both trial processes
  do first is in :mod:`~orchestrator.run.worker`.
- :mod:`~orchestrator.run.reporter`: the trial's reporter under Ray (checkpoints through Ray).
- :mod:`~orchestrator.run.lock`: one process per run or results folder (``mmbal train --out`` too).
"""
