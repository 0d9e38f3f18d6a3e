"""User-facing errors: one line that names the key, what was given and what is allowed."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user mistake in a config, sweep file or command line.

    Args:
        key: dotted config key (``optim.lr``) or the thing that is wrong (``method``).
        message: what is wrong and what is allowed.
        source: file the key came from, when known; filled in by the CLI.
    """

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        self.key = key
        self.message = message
        self.source = source
        super().__init__(self.line())

    def line(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.key}: {self.message}"

    def with_source(self, source: str) -> ConfigError:
        return ConfigError(self.key, self.message, source)


class DataError(RuntimeError):
    """Bad data on disk: names the file (and row) that is wrong."""


class Diverged(RuntimeError):
    """A trial's training loss (or a parameter) stopped being finite; the trial ends as ``diverged``.

    Args:
        epoch: the 1-based epoch whose statistics were not finite.
        metric: the first non-finite one (``train/loss``, or ``parameters``).
        value: its value (``nan``, ``inf``).
        summary: the trial's summary with ``status: diverged`` (what ``summary.json`` holds).
    """

    def __init__(self, epoch: int, metric: str, value: float, summary: dict | None = None) -> None:
        self.epoch, self.metric, self.value, self.summary = epoch, metric, value, summary
        super().__init__(f"{metric} is {value} at epoch {epoch}; the trial stopped (status: diverged)")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the one line to print (what finished, how to resume); the CLI exits 130."""
