"""The LIF neuron's parameters (shared/neuron.py), as every checkpoint stores them.

Kept apart from the torch modules so that a process without torch (the ONNX device) can read a
checkpoint's config.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LIFConfig:
    tau: float = 0.25  # membrane decay per time step
    v_th: float = 0.5  # firing threshold
    surrogate_width: float = 1.0  # `a` in Eq. 6: width of the rectangular surrogate window
