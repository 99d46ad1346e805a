"""The compiled LIF and tdBN loops (shared/lif_kernel.py, shared/lif_autograd.py) give the same bits on any CPU.

numba compiles them for the CPU it runs on: on this one with AVX2 or AVX-512 vectors and the FMA instruction,
on another with other vectors, and for a generic x86-64 (NUMBA_CPU_NAME=generic) with SSE2 only, the fused
multiply-add then a call to the C library's fmaf. Every value is nonetheless the same on all of them: each
operation is an IEEE basic operation or a fused multiply-add, correctly rounded wherever it runs; without
fastmath LLVM contracts no multiply and add into an FMA of its own; and it vectorizes only across independent
neurons or channels, never reassociating a sum. So the outputs here are compared bit for bit (NaN with NaN, its
payload aside), floats too: an ISA-dependent rounding anywhere shows in the membrane potentials and gradients
even where no spike changes.

The generic build runs in a subprocess with a cache directory of its own (the host's, where this process is
the generic one: under ``make test-portable``). numba would not reuse this process's
machine code there anyway (it keys its on-disk cache by the CPU name and features, with the signature), but a
fresh directory makes the subprocess compile, so its assembly can be inspected for the absence of vector and FMA
instructions: proof that the comparison is with another build. ``make test-portable`` runs the whole suite with
such a build (and other CPU emulations: see the Makefile).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba.core import config as numba_config

from spikebottlenet.shared.lif_autograd import batch_norm_update_stats, train_affine
from spikebottlenet.shared.lif_kernel import (
    MEMBRANE_CHUNK,
    batch_norm_train_grad_input,
    channel_stats,
    lif_norm_train_backward,
    lif_norm_train_forward,
    lif_steps,
    lif_train_backward,
    lif_train_forward,
)

T, B, C, S = 6, 3, 6, 200  # S neurons a channel: C * S = 1200 a sample, one chunk of MEMBRANE_CHUNK and a rest
P = C * S
TAU, V_TH, WIDTH = np.float32(0.25), np.float32(0.5), np.float32(1.0)


def kernel_inputs() -> dict[str, np.ndarray]:
    """Seeded inputs, made once and handed to both builds as they are (so no library function's own rounding
    on either side can make them differ): currents spread over a few thresholds with some exactly at it, per
    channel affine maps of both signs, a shortcut of spikes and a few infinities, upstream gradients, a starting
    membrane."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((T, B, P)) * 1.5 + 0.3).astype(np.float32)  # [T, B, P]
    x.reshape(-1)[::17] = V_TH  # exactly at the threshold: fires (>=), the window's middle
    shortcut = (rng.random((T, B, P)) < 0.4).astype(np.float32)  # [T, B, P]: spikes ...
    shortcut[0, 0, :2], shortcut[1, 1, :2] = np.inf, -np.inf  # ... and infinities (+inf fires; its reset is NaN)
    return {
        "x": x,
        "scale": (rng.standard_normal(C) * 2).astype(np.float32),  # [C]
        "shift": rng.standard_normal(C).astype(np.float32),  # [C]
        "shortcut": shortcut,
        "membrane": (rng.standard_normal((B, P)) * 0.5).astype(np.float32),  # [B, P]
        "grad": rng.standard_normal((T, B, P)).astype(np.float32),  # [T, B, P]
        "weight": (rng.random(C) + 0.5).astype(np.float32),  # [C]
        "bias": rng.standard_normal(C).astype(np.float32),  # [C]
        "running_mean": rng.standard_normal(C).astype(np.float32),  # [C]
        "running_var": (rng.random(C) + 0.5).astype(np.float32),  # [C]
    }


def run_kernels(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every compiled loop on ``inputs``, chained as the LIF and the tdBN chain them, and what each wrote."""
    x, scale, shift, shortcut, grad = (inputs[k] for k in ("x", "scale", "shift", "shortcut", "grad"))
    out: dict[str, np.ndarray] = {}
    # inference: tdBN folded in (rounded once and twice), the shortcut added, from a membrane kept across calls
    for rounded_once in (True, False):
        membrane, spikes = inputs["membrane"].copy(), np.empty_like(x)
        lif_steps(x, scale, shift, rounded_once, shortcut, TAU, V_TH, membrane, spikes)
        out[f"lif_steps rounded_once={rounded_once}: spikes"] = spikes
        out[f"lif_steps rounded_once={rounded_once}: membrane"] = membrane
    bool_spikes = np.empty(x.shape, np.bool_)
    lif_steps(x, None, None, False, None, TAU, V_TH, None, bool_spikes)  # the encoder's: from rest, a byte a spike
    out["lif_steps: bool spikes"] = bool_spikes
    # training, the LIF alone on [T, N]
    current = x.reshape(T, -1)
    spikes, membrane, grad_current = np.empty_like(current), np.empty_like(current), np.empty_like(current)
    lif_train_forward(current, TAU, V_TH, spikes, membrane)
    lif_train_backward(grad.reshape(T, -1), membrane, TAU, V_TH, WIDTH / 2, WIDTH, grad_current)
    out.update(
        {
            "lif_train_forward: spikes": spikes,
            "lif_train_forward: membrane": membrane,
            "lif_train_backward": grad_current,
        }
    )
    # training with the tdBN: batch statistics, running statistics, the map, the pass and its backward
    mean, var_sum, invstd = (np.empty(C, np.float32) for _ in range(3))
    channel_stats(x.reshape(T * B, C, S), mean, var_sum)
    running_mean, running_var = inputs["running_mean"].copy(), inputs["running_var"].copy()
    batch_norm_update_stats(mean, var_sum, T * B * S, 0.1, 1e-5, invstd, running_mean, running_var)
    out.update(
        {
            "channel_stats: mean": mean,
            "channel_stats: var_sum": var_sum,
            "update_stats: invstd": invstd,
            "update_stats: running_mean": running_mean,
            "update_stats: running_var": running_var,
        }
    )
    for shift_rounded_once in (True, False):  # the map of the last, rounded twice, drives the pass below
        train_scale, train_shift = np.empty(C, np.float32), np.empty(C, np.float32)
        train_affine(mean, invstd, inputs["weight"], inputs["bias"], shift_rounded_once, train_scale, train_shift)
        out[f"train_affine shift_rounded_once={shift_rounded_once}: scale"] = train_scale
        out[f"train_affine shift_rounded_once={shift_rounded_once}: shift"] = train_shift
    for rounded_once in (True, False):
        spikes = np.empty_like(x)
        lif_norm_train_forward(x, S, train_scale, train_shift, rounded_once, shortcut, TAU, V_TH, spikes)
        grad_current, grad_sum, grad_dot = np.empty_like(x), np.zeros(C), np.zeros(C)
        lif_norm_train_backward(
            grad,
            x,
            S,
            train_scale,
            train_shift,
            rounded_once,
            shortcut,
            mean,
            TAU,
            V_TH,
            WIDTH / 2,
            WIDTH,
            grad_current,
            grad_sum,
            grad_dot,
        )
        out.update(
            {
                f"lif_norm_train_forward rounded_once={rounded_once}": spikes,
                f"lif_norm_train_backward rounded_once={rounded_once}: grad_current": grad_current,
                f"lif_norm_train_backward rounded_once={rounded_once}: grad_sum": grad_sum,
                f"lif_norm_train_backward rounded_once={rounded_once}: grad_dot": grad_dot,
            }
        )
    k = (grad_dot.astype(np.float32) * invstd * invstd / np.float32(T * B * S)).astype(np.float32)
    grad_mean = (grad_sum / (T * B * S)).astype(np.float32)
    grad_input = np.empty_like(x)
    batch_norm_train_grad_input(grad_current, x, S, mean, k, grad_mean, invstd, inputs["weight"], grad_input)
    out["batch_norm_train_grad_input"] = grad_input
    return out


# Run by the subprocess: compile afresh for the CPU its environment names, save what the loops wrote, and for a
# generic build check that the machine code is generic x86-64's (no AVX register, no FMA instruction) where this
# is x86.
OTHER_BUILD_RUN = """
import platform, sys
import numpy as np
from numba.core import config
from tests.shared import test_portable_kernels as kernels

inputs, outputs, generic = sys.argv[1], sys.argv[2], sys.argv[3] == "generic"
assert (config.CPU_NAME == "generic" and config.CPU_FEATURES == "") == generic, (config.CPU_NAME, config.CPU_FEATURES)
np.savez(outputs, **kernels.run_kernels(dict(np.load(inputs))))
if generic and platform.machine().lower() in ("x86_64", "amd64"):
    for signature in kernels.lif_steps.signatures:
        asm = kernels.lif_steps.inspect_asm(signature)
        assert not any(name in asm for name in ("%ymm", "%zmm", "vfmadd")), "not a generic x86-64 build"
"""


@pytest.mark.slow
def test_kernels_built_for_a_generic_cpu_give_the_host_builds_bits(tmp_path: Path) -> None:
    assert P > MEMBRANE_CHUNK  # a full chunk of neurons and a rest: both loops' tails run
    inputs = kernel_inputs()
    np.savez(tmp_path / "inputs.npz", **inputs)
    # the other build is the generic one; where this process is itself generic (make test-portable), the host's
    this_is_generic = numba_config.CPU_NAME == "generic"
    env = {name: value for name, value in os.environ.items() if name not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    if not this_is_generic:
        env |= {"NUMBA_CPU_NAME": "generic", "NUMBA_CPU_FEATURES": ""}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba-cache")
    subprocess.run(
        [
            sys.executable,
            "-c",
            OTHER_BUILD_RUN,
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "other.npz"),
            "host" if this_is_generic else "generic",
        ],
        env=env,
        cwd=Path(__file__).parents[2],
        check=True,
        timeout=600,
    )
    other = dict(np.load(tmp_path / "other.npz"))
    here = run_kernels(inputs)
    assert set(other) == set(here)
    for name, expected in here.items():
        got = other[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        nan = np.isnan(expected) if expected.dtype.kind == "f" else np.zeros(expected.shape, bool)
        assert np.array_equal(np.isnan(got) if got.dtype.kind == "f" else nan, nan), f"{name}: NaNs differ"
        bits = f"u{expected.dtype.itemsize}"  # compares -0.0 with 0.0 too
        mismatched = np.flatnonzero((got.view(bits) != expected.view(bits)) & ~nan)
        assert mismatched.size == 0, f"{name}: {mismatched.size} values differ, first at {mismatched[:5]}"
    # the comparison saw both outcomes of the threshold, and the NaN an infinite current leaves after its reset
    assert 0 < here["lif_steps rounded_once=True: spikes"].mean() < 1
    assert np.isnan(here["lif_steps rounded_once=True: membrane"]).any()
