"""The device's uplink: how long a frame takes to send and what sending it costs in energy.

BottleNet (Eshratifar et al., 2019), Table 1, measured a phone's uplink power as a linear function of
the throughput, P(r) = alpha * r + beta (mW, r in Mbps), at a typical rate for each radio:

    link    rate (Mbps)   alpha (mW/Mbps)   beta (mW)
    3G         1.10           868.98          817.88
    4G         5.85           438.39         1288.04
    Wi-Fi     18.88           283.17          132.86

Sending ``bits`` at rate r takes bits / r seconds at power P(r):

    transmit time    t = bits / (r * 1e6)                      (s)
    transmit energy  E = P(r) * t = (alpha * r + beta) * t      (mJ, P in mW and t in s)

The radio's cost on top of the device's compute is what makes the best split point depend on the
link: a fast link makes sending cheap, so an early split (little compute on the device) wins; on a
slow one the later, smaller frame wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class LinkProfile:
    """An uplink: its rate, its power model and the round trip it adds to every frame."""

    name: str
    rate_mbps: float  # uplink throughput
    power_mw_per_mbps: float  # alpha: the power that grows with the rate
    base_power_mw: float  # beta: the power of an active radio at any rate
    rtt_ms: float = 0.0  # round-trip time of a minimal message (latency beyond the bytes' transfer)

    def __post_init__(self) -> None:
        if self.rate_mbps <= 0 or self.power_mw_per_mbps < 0 or self.base_power_mw < 0 or self.rtt_ms < 0:
            raise ConfigError(f"a link needs a positive rate and non-negative power and round trip, got {self}")

    @property
    def power_mw(self) -> float:
        """P(r) = alpha * r + beta at this link's rate."""
        return self.power_mw_per_mbps * self.rate_mbps + self.base_power_mw

    def transmit_ms(self, payload_bytes: float) -> float:
        """Time to push ``payload_bytes`` through the uplink (without the round trip)."""
        return payload_bytes * 8 / (self.rate_mbps * 1e6) * 1e3

    def transmit_mj(self, payload_bytes: float) -> float:
        """Radio energy to send ``payload_bytes``: P(r) [mW] * t [s] = mJ."""
        return self.power_mw * self.transmit_ms(payload_bytes) / 1e3

    def with_rate(self, rate_mbps: float, rtt_ms: float | None = None) -> LinkProfile:
        """The same radio at another (e.g. measured) rate and round trip: its power follows P(r)."""
        return LinkProfile(
            f"{self.name} (measured)",
            rate_mbps,
            self.power_mw_per_mbps,
            self.base_power_mw,
            self.rtt_ms if rtt_ms is None else rtt_ms,
        )


# BottleNet's measured uplinks (Table 1). The paper gives no round trips: these are assumed, typical of
# each kind of network, and a device measures its own (device/link_estimator.py).
LINK_PROFILES: dict[str, LinkProfile] = {
    "3g": LinkProfile("3g", 1.10, 868.98, 817.88, rtt_ms=100.0),
    "4g": LinkProfile("4g", 5.85, 438.39, 1288.04, rtt_ms=50.0),
    "wifi": LinkProfile("wifi", 18.88, 283.17, 132.86, rtt_ms=5.0),
}
DEFAULT_LINK = "wifi"


def link_profile(name: str, rate_mbps: float | None = None, rtt_ms: float | None = None) -> LinkProfile:
    """The named profile, or with a custom rate and/or round trip on that radio's power model."""
    try:
        profile = LINK_PROFILES[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown link {name!r}; expected one of {', '.join(LINK_PROFILES)}") from None
    if rate_mbps is None and rtt_ms is None:
        return profile
    return LinkProfile(
        f"{profile.name} (custom)",
        profile.rate_mbps if rate_mbps is None else rate_mbps,
        profile.power_mw_per_mbps,
        profile.base_power_mw,
        profile.rtt_ms if rtt_ms is None else rtt_ms,
    )
