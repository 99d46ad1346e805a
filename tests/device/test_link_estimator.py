"""The link estimator on synthetic round trips: known rate and round trip in, the same out."""

from __future__ import annotations

import random

import pytest

from spikebottlenet.device.link_estimator import MAX_RATE_MBPS, LinkEstimator
from spikebottlenet.shared.radio import LINK_PROFILES, LinkProfile


def network_ms(message_bytes: int, rate_mbps: float, rtt_ms: float) -> float:
    """What a frame takes on a link: the round trip plus its bits at the rate (written out)."""
    return rtt_ms + message_bytes * 8 / (rate_mbps * 1e6) * 1e3


def test_the_prior_until_enough_replies() -> None:
    estimator = LinkEstimator(LINK_PROFILES["4g"], min_samples=4)
    for _ in range(3):
        estimator.observe(500, 80.0)
    assert estimator.link() is LINK_PROFILES["4g"] and not estimator.measured


def test_frames_of_several_sizes_give_rate_and_round_trip() -> None:
    estimator = LinkEstimator(LINK_PROFILES["wifi"])
    noise = random.Random(0)
    for i in range(32):
        size = (100, 400, 1600)[i % 3]
        estimator.observe(size, network_ms(size, rate_mbps=0.5, rtt_ms=30.0) * (1 + noise.uniform(-0.02, 0.02)))
    link = estimator.link()
    assert link.rate_mbps == pytest.approx(0.5, rel=0.05)
    assert link.rtt_ms == pytest.approx(30.0, abs=2.0)
    # the radio's power model stays the prior's: P follows the measured rate
    assert (link.power_mw_per_mbps, link.base_power_mw) == (283.17, 132.86)


def test_frames_of_one_size_take_the_round_trip_from_the_prior() -> None:
    prior = LinkProfile("test", rate_mbps=10.0, power_mw_per_mbps=1.0, base_power_mw=1.0, rtt_ms=20.0)
    estimator = LinkEstimator(prior)
    for _ in range(10):
        estimator.observe(1000, network_ms(1000, rate_mbps=0.25, rtt_ms=20.0))  # 20 + 32 ms
    link = estimator.link()
    assert link.rtt_ms == 20.0 and link.rate_mbps == pytest.approx(0.25)


def test_a_link_that_changes_is_followed_within_the_window() -> None:
    estimator = LinkEstimator(LINK_PROFILES["wifi"], window=16)
    sizes = (128, 256, 1024)
    for i in range(16):
        estimator.observe(sizes[i % 3], network_ms(sizes[i % 3], rate_mbps=50.0, rtt_ms=1.0))
    fast = estimator.link()
    for i in range(16):
        estimator.observe(sizes[i % 3], network_ms(sizes[i % 3], rate_mbps=0.064, rtt_ms=1.0))
    slow = estimator.link()
    assert fast.rate_mbps > 20 and slow.rate_mbps == pytest.approx(0.064, rel=0.01)


def test_transfers_below_the_timer_noise_read_as_the_fastest_rate() -> None:
    estimator = LinkEstimator(LINK_PROFILES["wifi"])
    for i in range(8):
        estimator.observe((100, 300)[i % 2], 0.5 - 0.01 * (i % 2))  # larger frames no slower: loopback noise
    assert estimator.link().rate_mbps == MAX_RATE_MBPS
