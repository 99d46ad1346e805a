"""The one base of the errors meant for users, so that a caller can tell them from bugs.

A ``SpikeBottleNetError`` says that something outside the code is not as it must be: a file (a checkpoint,
an image, a dataset), a flag or setting, a request, a peer (the edge, the device). The command line prints
one as a single line and exits 1 (sbn/cli.py); any other exception is a bug and keeps its traceback.
Each subclass lives beside the code that raises it and keeps the built-in base its callers catch
(``CheckpointError(SpikeBottleNetError, ValueError)``).
"""

from __future__ import annotations


class SpikeBottleNetError(Exception):
    """A user's error: the message says what is wrong and, where it can, what to do about it."""


class ConfigError(SpikeBottleNetError, ValueError):
    """A model, bottleneck, link, channel or training setting that cannot be: an unknown name, a value out of range,
    or values that do not go together."""
