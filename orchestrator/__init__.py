"""mmbal's orchestration side: CLI, sweeps on Ray Tune/Train, tracking and reports."""
