"""The device's uplink as its recent frames saw it: round trip and rate, for the planner's ``auto``.

Every reply from the edge is one sample: the frame's size on the wire and its network time, the gRPC
round trip minus the edge's own time. A frame of b bytes takes about

    network_ms = rtt_ms + 8 * b / rate

so over a window of recent samples:

- frames of different sizes (split points chosen by ``auto`` or by the request, batches): a
  least-squares line through (b, network_ms) gives rtt_ms (its intercept) and the rate (8 / slope);
- frames of one size only: the two cannot be told apart, so the round trip is taken from the prior
  link (the configured profile), or the fastest sample if that is quicker, and the rate from the
  median sample's remaining time.

The window (``window`` samples, oldest dropped) is the smoothing: a link that changes is followed
within that many frames, and one delayed frame moves a median or a fit over many only a little.
Until ``min_samples`` replies have come back the prior link is the estimate. The radio's power model
(shared/radio.py) stays the prior's: only rate and round trip are measured.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from spikebottlenet.shared.radio import LinkProfile

# A transfer time below the timer noise of a loopback round trip says only "faster than we can
# tell": cap the rate there instead of dividing by nearly nothing.
MAX_RATE_MBPS = 10_000.0
SPREAD = 1.5  # sizes this far apart (largest / smallest) make the fit worth trusting


@dataclass(frozen=True)
class LinkSample:
    message_bytes: int
    network_ms: float


class LinkEstimator:
    """Thread-safe: replies are observed on the event loop, estimates read by the planner."""

    def __init__(self, prior: LinkProfile, window: int = 32, min_samples: int = 4) -> None:
        self.prior = prior
        self.min_samples = min_samples
        self._samples: deque[LinkSample] = deque(maxlen=window)
        self._lock = threading.Lock()

    def observe(self, message_bytes: int, network_ms: float) -> None:
        with self._lock:
            self._samples.append(LinkSample(message_bytes, max(0.0, network_ms)))

    @property
    def measured(self) -> bool:
        """Whether the estimate comes from replies rather than the prior."""
        return len(self._samples) >= self.min_samples

    def link(self) -> LinkProfile:
        """The link as measured (the prior's radio, the measured rate and round trip), or the prior."""
        with self._lock:
            samples = list(self._samples)
        if len(samples) < self.min_samples:
            return self.prior
        sizes = np.array([s.message_bytes for s in samples], dtype=np.float64)
        times = np.array([s.network_ms for s in samples], dtype=np.float64)
        if sizes.max() >= SPREAD * sizes.min():
            slope, intercept = np.polyfit(sizes, times, 1)  # ms per byte, ms
            rtt_ms = max(0.0, float(intercept))
            rate_mbps = MAX_RATE_MBPS if slope <= 0 else min(MAX_RATE_MBPS, 8 / (float(slope) * 1e3))
            return self.prior.with_rate(rate_mbps, rtt_ms)
        rtt_ms = min(self.prior.rtt_ms, float(times.min()))
        transfer_ms = statistics.median(times) - rtt_ms
        size = statistics.median(sizes)
        rate_mbps = MAX_RATE_MBPS if transfer_ms <= 0 else min(MAX_RATE_MBPS, size * 8 / (transfer_ms * 1e3))
        return self.prior.with_rate(rate_mbps, rtt_ms)
