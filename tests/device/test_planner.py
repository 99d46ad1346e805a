"""The split-point planner as a pure function on hand-made profiles, and the radio arithmetic by hand."""

from __future__ import annotations

import pytest

from spikebottlenet.device.planner import NoEligibleSplit, Objective, SplitProfile, plan
from spikebottlenet.shared.radio import LINK_PROFILES, LinkProfile, link_profile

# Early split: cheap on the device, a big frame, a heavy tail. Late split: the opposite.
EARLY = SplitProfile(
    "spiking_resnet50", 3, "RB3", device_ms=2.0, device_mj=0.01, message_bytes=2000, edge_ms=10.0, accuracy_drop=1.0
)
LATE = SplitProfile(
    "spiking_resnet50", 16, "RB16", device_ms=20.0, device_mj=0.5, message_bytes=100, edge_ms=1.0, accuracy_drop=0.5
)


def test_the_paper_uplink_figures_by_hand() -> None:
    # BottleNet Table 1: P = alpha * r + beta (mW), r in Mbps
    assert LINK_PROFILES["3g"].power_mw == pytest.approx(868.98 * 1.10 + 817.88)
    assert LINK_PROFILES["4g"].power_mw == pytest.approx(438.39 * 5.85 + 1288.04)
    wifi = LINK_PROFILES["wifi"]
    assert wifi.power_mw == pytest.approx(283.17 * 18.88 + 132.86)  # 5,479.11 mW
    # 1,000 bytes = 8,000 bits over 18.88 Mbps: 0.42373 ms, at 5,479.11 mW: 2.3217 mJ
    assert wifi.transmit_ms(1000) == pytest.approx(8000 / 18.88e6 * 1e3)
    assert wifi.transmit_mj(1000) == pytest.approx(5479.1096 * (8000 / 18.88e6))
    assert wifi.transmit_mj(1000) == pytest.approx(2.3217, abs=1e-4)
    # a custom rate on 3G's radio: its power follows P(r) at that rate
    custom = link_profile("3G", rate_mbps=2.0, rtt_ms=7.0)
    assert (custom.power_mw, custom.rtt_ms) == (pytest.approx(868.98 * 2.0 + 817.88), 7.0)
    with pytest.raises(ValueError, match="3g, 4g, wifi"):
        link_profile("5g")


def test_latency_and_energy_objectives_choose_differently_on_wifi() -> None:
    wifi = LINK_PROFILES["wifi"]
    by_latency = plan([EARLY, LATE], wifi, Objective.LATENCY)
    by_energy = plan([EARLY, LATE], wifi, Objective.ENERGY)
    early, late = by_latency.estimates
    # written out: device + bytes / rate + round trip + edge
    assert early.latency_ms == pytest.approx(2.0 + 2000 * 8 / 18.88e6 * 1e3 + 5.0 + 10.0)  # 17.85 ms
    assert late.latency_ms == pytest.approx(20.0 + 100 * 8 / 18.88e6 * 1e3 + 5.0 + 1.0)  # 26.04 ms
    # device energy + radio power x transmit time: the early frame's radio bill (4.64 mJ) outweighs its
    # cheap compute, so the energy objective sends late
    assert early.energy_mj == pytest.approx(0.01 + 5479.1096 * 2000 * 8 / 18.88e6)
    assert late.energy_mj == pytest.approx(0.5 + 5479.1096 * 100 * 8 / 18.88e6)
    assert by_latency.choice.profile is EARLY and by_energy.choice.profile is LATE


def test_a_slow_link_moves_the_latency_choice_to_the_later_split() -> None:
    fast = LinkProfile("fast", rate_mbps=100.0, power_mw_per_mbps=0, base_power_mw=0, rtt_ms=1.0)
    slow = LinkProfile("slow", rate_mbps=0.5, power_mw_per_mbps=0, base_power_mw=0, rtt_ms=1.0)
    assert plan([EARLY, LATE], fast).choice.profile is EARLY  # 2 + 0.16 + 1 + 10 < 20 + 0.008 + 1 + 1
    assert plan([EARLY, LATE], slow).choice.profile is LATE  # 2 + 32 + 1 + 10 > 20 + 1.6 + 1 + 1


def test_the_mix_weighs_each_objective_relative_to_its_best() -> None:
    wifi = LINK_PROFILES["wifi"]
    # From the figures worked out above: latency 17.847 ms (early, the best) and 26.042 ms (late); energy 4.6533 mJ
    # (early) and 0.73217 mJ (late, the best). Each objective counts relative to its best, so at weight w:
    #   early: w * 1 + (1 - w) * 4.6533 / 0.73217 = w + (1 - w) * 6.3556
    #   late:  w * 26.042 / 17.847 + (1 - w) * 1 = w * 1.4592 + (1 - w)
    # At w = 0.9 that is 1.5356 against 1.4132: the late split's energy saving outweighs its slower answer.
    result = plan([EARLY, LATE], wifi, Objective.MIX, latency_weight=0.9)
    early, late = result.estimates
    assert (early.score, late.score) == (pytest.approx(1.53555, abs=1e-4), pytest.approx(1.41325, abs=1e-4))
    assert result.choice.profile is LATE
    # at w = 0.97 latency dominates: 1.1607 against 1.4454
    result = plan([EARLY, LATE], wifi, Objective.MIX, latency_weight=0.97)
    assert [e.score for e in result.estimates] == [pytest.approx(1.16067, abs=1e-4), pytest.approx(1.44539, abs=1e-4)]
    assert result.choice.profile is EARLY
    assert plan([EARLY, LATE], wifi, Objective.MIX, latency_weight=0.0).choice.profile is LATE  # energy alone
    assert plan([EARLY, LATE], wifi, Objective.MIX, latency_weight=1.0).choice.profile is EARLY  # latency alone


def test_the_accuracy_budget_excludes_split_points() -> None:
    wifi = LINK_PROFILES["wifi"]
    result = plan([EARLY, LATE], wifi, Objective.LATENCY, max_accuracy_drop=0.8)
    assert [e.eligible for e in result.estimates] == [False, True]
    assert result.choice.profile is LATE and result.estimates[0].score == float("inf")
    unknown = SplitProfile("spiking_resnet50", 8, "RB8", 5.0, 0.1, 500, 5.0, accuracy_drop=None)
    assert not plan([unknown, LATE], wifi, max_accuracy_drop=3).estimates[0].eligible  # unknown drop: not trusted
    assert plan([unknown], wifi).choice.profile is unknown  # no budget: anything goes
    with pytest.raises(NoEligibleSplit, match="0.1 point"):
        plan([EARLY, LATE], wifi, max_accuracy_drop=0.1)
