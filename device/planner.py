"""Choosing the split point for a link: a pure function of measured profiles, a link and an objective.

For each (backbone, split point) the device can run, the planner knows

    device_ms       the head's compute time on this device (measured at start-up, then from requests)
    device_mj       the head's energy at 45 nm, from measured firing rates (shared/energy.py)
    message_bytes   the frame on the wire: payload (per codec) and envelope
    edge_ms         the tail's time on the edge (the edge measures it; GetModelInfo reports it)
    accuracy_drop   points lost against the backbone (the checkpoint's info); None: unknown

and, for a link (shared/radio.py: rate, round trip, radio power),

    transmit_ms  = message_bytes * 8 / rate
    latency_ms   = device_ms + transmit_ms + rtt_ms + edge_ms
    transmit_mj  = P(rate) * transmit_ms / 1000
    energy_mj    = device_mj + transmit_mj                  (what the device's battery pays)

Split points whose accuracy drop exceeds the budget (or is unknown while a budget is set) are not
eligible. Among the eligible ones the objective picks: the lowest latency, the lowest energy, or for
``mix`` the lowest  w * latency / best latency + (1 - w) * energy / best energy, each term relative to
the best eligible value so that milliseconds and millijoules weigh alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from spikebottlenet.shared.errors import ConfigError, SpikeBottleNetError
from spikebottlenet.shared.radio import LinkProfile


class Objective(str, Enum):
    LATENCY = "latency"
    ENERGY = "energy"
    MIX = "mix"


@dataclass(frozen=True)
class SplitProfile:
    """What one split point costs, before the link."""

    arch: str
    split_point: int
    split_point_name: str
    device_ms: float
    device_mj: float
    message_bytes: int
    edge_ms: float
    accuracy_drop: float | None


@dataclass(frozen=True)
class SplitEstimate:
    profile: SplitProfile
    transmit_ms: float
    latency_ms: float
    transmit_mj: float
    energy_mj: float
    eligible: bool  # within the accuracy-drop budget
    score: float  # the objective's value; lower is better (inf when not eligible)


@dataclass(frozen=True)
class Plan:
    link: LinkProfile
    objective: Objective
    estimates: list[SplitEstimate]  # in the order of the profiles given
    choice: SplitEstimate


class NoEligibleSplit(SpikeBottleNetError, ValueError):
    """No split point is within the accuracy-drop budget."""


def estimate(profile: SplitProfile, link: LinkProfile) -> tuple[float, float, float, float]:
    """(transmit_ms, latency_ms, transmit_mj, energy_mj) of one split point on ``link``."""
    transmit_ms = link.transmit_ms(profile.message_bytes)
    transmit_mj = link.transmit_mj(profile.message_bytes)
    latency_ms = profile.device_ms + transmit_ms + link.rtt_ms + profile.edge_ms
    return transmit_ms, latency_ms, transmit_mj, profile.device_mj + transmit_mj


def plan(
    profiles: Sequence[SplitProfile],
    link: LinkProfile,
    objective: Objective | str = Objective.LATENCY,
    max_accuracy_drop: float | None = None,
    latency_weight: float = 0.5,
) -> Plan:
    """The estimates of every split point on ``link`` and the one the objective picks.

    ``max_accuracy_drop``: points; None: no budget. ``latency_weight``: w of the ``mix`` objective, 0..1.
    Raises NoEligibleSplit when no split point fits the budget.
    """
    objective = Objective(objective)
    if not 0 <= latency_weight <= 1:
        raise ConfigError(f"latency_weight must be within 0..1, got {latency_weight}")
    if not profiles:
        raise NoEligibleSplit("no split points to choose from")
    figures = [estimate(p, link) for p in profiles]
    eligible = [
        max_accuracy_drop is None or (p.accuracy_drop is not None and p.accuracy_drop <= max_accuracy_drop)
        for p in profiles
    ]
    if not any(eligible):
        drops = ", ".join(f"{p.split_point_name} {p.accuracy_drop}" for p in profiles)
        raise NoEligibleSplit(f"no split point within the {max_accuracy_drop} point accuracy-drop budget ({drops})")
    best_latency = min(f[1] for f, ok in zip(figures, eligible, strict=True) if ok)
    best_energy = min(f[3] for f, ok in zip(figures, eligible, strict=True) if ok)

    def score(latency_ms: float, energy_mj: float) -> float:
        if objective is Objective.LATENCY:
            return latency_ms
        if objective is Objective.ENERGY:
            return energy_mj
        return latency_weight * latency_ms / best_latency + (1 - latency_weight) * energy_mj / best_energy

    estimates = [
        SplitEstimate(
            p, transmit_ms, latency_ms, transmit_mj, energy_mj, ok, score(latency_ms, energy_mj) if ok else float("inf")
        )
        for p, (transmit_ms, latency_ms, transmit_mj, energy_mj), ok in zip(profiles, figures, eligible, strict=True)
    ]
    choice = min((e for e in estimates if e.eligible), key=lambda e: e.score)
    return Plan(link, objective, estimates, choice)
