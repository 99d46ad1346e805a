"""The multi-step LIF's inference pass as one compiled loop (numba), bitwise equal to shared/neuron.py's.

The reference LIF runs its T steps as separate tensor operations (charge, fire, reset, then a stack),
each a full pass over memory: about a third of a full-width forward on CPU. Here each neuron's T
steps run inside one loop, with the membrane potential kept in a small buffer that stays in cache:
the input is read once and the spikes written once. The per-channel affine map of an eval-mode tdBN
and the residual shortcut added before a block's LIF can ride along in the same pass, so those cost
no pass of their own either.

Bitwise equality with the reference: every value is rounded as the tensor operations round it. The
charge is fl(fl(tau * u) + I) in float32 (numba contracts nothing into a fused multiply-add without
fastmath, which is off), the fire is u >= v_th against v_th in float32 (as torch compares a float32
tensor to a Python float), the reset is u * (1 - s), the reference's own formula (a where would
differ for an infinite u, which the product turns into NaN). The affine map is rounded once (a
fused multiply-add) or twice, as the batch-norm kernel it stands for does (``ChannelAffine``).

The loop is plain numba, single-threaded (no ``parallel``): it never competes with torch's intra-op
threads. It compiles on first use, once per process and argument types; ``cache=True`` keeps the
machine code on disk next to this file or, where that is read-only (an installed package), in the
user's cache directory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, types
from numba.extending import intrinsic

# Neurons the time loop covers at a time: their membrane potentials, scales and shifts (3 x 4 KiB of
# float32) stay in L1 over the T steps.
MEMBRANE_CHUNK = 1024


@dataclass(frozen=True)
class ChannelAffine:
    """The per-channel map x -> x * scale[c] + shift[c] of an inference batch norm, c = dim 2 of [T, B, C, ...]."""

    scale: torch.Tensor  # [C] float32
    shift: torch.Tensor  # [C] float32
    rounded_once: bool  # as by a fused multiply-add; else after the multiply and again after the add


def compiled(function):
    """njit with an on-disk cache; without one where numba finds no writable cache directory at all
    (neither beside this file nor in the user's cache: a read-only image), where numba raises rather
    than warns. Then the loop compiles once per process."""
    try:
        return njit(cache=True, nogil=True)(function)
    except RuntimeError:
        return njit(nogil=True)(function)


@intrinsic
def fused_multiply_add(typingctx, x, y, z):
    """x * y + z rounded once (LLVM's llvm.fma, a single instruction where the CPU has one)."""
    if not all(arg == types.float32 for arg in (x, y, z)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@compiled
def lif_steps(x, scale, shift, rounded_once, shortcut, tau, v_th, membrane, spikes):
    """spikes[t] of the LIF driven by I[t] = x[t] * scale + shift + shortcut[t], starting from the membrane
    potentials ``membrane`` [B, N] (float32), which it leaves as they are after the last step; None: from rest,
    and nothing kept (no array of zeros to allocate, read and write back).

    x, shortcut: [T, B, N] float32, the N neurons of a sample in memory order; spikes: [T, B, N], float32
    or bool (numba compiles a loop for each, the bool one writing a byte per spike), or None: into x, in
    place; scale, shift: [C] float32, the N neurons being C channels of N / C each. scale and shift, and
    shortcut, may be None: numba then compiles a loop without them. The affine map is rounded once (a
    fused multiply-add) or, rounded_once False, after the multiply and again after the add.
    """
    time_steps, batch, neurons = x.shape
    chunk = min(neurons, MEMBRANE_CHUNK)
    u = np.empty(chunk, np.float32)  # membrane potentials of one chunk of neurons
    # the chunk's neurons' scale and shift: a channel of a late layer holds only 4 x 4 neurons, and
    # per-channel inner loops that short would not vectorize
    neuron_scale, neuron_shift = np.empty(chunk, np.float32), np.empty(chunk, np.float32)
    per_channel = neurons // scale.size if scale is not None else neurons
    one, zero = np.float32(1), np.float32(0)
    for start in range(0, neurons, chunk):
        stop = min(start + chunk, neurons)
        if scale is not None:
            for c in range(start // per_channel, (stop - 1) // per_channel + 1):
                first, last = max(c * per_channel, start) - start, min((c + 1) * per_channel, stop) - start
                neuron_scale[first:last] = scale[c]
                neuron_shift[first:last] = shift[c]
        for b in range(batch):
            if membrane is None:  # at rest
                u[:stop - start] = zero
            else:
                u[:stop - start] = membrane[b, start:stop]
            # t outside, neurons inside: the innermost loop runs over neighbours in memory and vectorizes
            for t in range(time_steps):
                x_t = x[t, b, start:stop]
                spikes_t = spikes[t, b, start:stop] if spikes is not None else None
                shortcut_t = shortcut[t, b, start:stop] if shortcut is not None else None
                for n in range(stop - start):
                    current = x_t[n]
                    if scale is not None:
                        if rounded_once:
                            current = fused_multiply_add(current, neuron_scale[n], neuron_shift[n])
                        else:
                            current = current * neuron_scale[n] + neuron_shift[n]
                    if shortcut is not None:
                        current = current + shortcut_t[n]
                    v = tau * u[n] + current  # charge
                    s = one if v >= v_th else zero  # fire
                    if spikes is None:
                        # in place: the spike overwrites the input just read, at the same address, so the loop still
                        # vectorizes (passing x as spikes would fail LLVM's check that they do not overlap: scalar)
                        x_t[n] = s
                    else:
                        spikes_t[n] = s
                    u[n] = v * (one - s)  # reset
            if membrane is not None:
                membrane[b, start:stop] = u[:stop - start]


def runs_in_kernel(x: torch.Tensor, shortcut: torch.Tensor | None) -> bool:
    """Whether ``lif_pass`` takes these tensors: float32 on the CPU, not empty, the shortcut shaped as x."""
    tensors = (x,) if shortcut is None else (x, shortcut)
    return (x.dim() >= 2 and x.numel() > 0 and (shortcut is None or shortcut.shape == x.shape)
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors))


def lif_pass(x: torch.Tensor, tau: float, v_th: float, affine: ChannelAffine | None = None,
             shortcut: torch.Tensor | None = None, membrane: torch.Tensor | None = None,
             spike_dtype: torch.dtype = torch.float32, inplace: bool = False) -> torch.Tensor:
    """Spikes [T, B, ...] of a multi-step LIF whose input current is affine(x) + shortcut, as ``spike_dtype``
    (float32 or bool).

    x: [T, B, ...], or [T, B, C, ...] with an affine map over C; shortcut: x's shape. Every tensor
    float32 on the CPU (``runs_in_kernel``). No autograd: inference only. ``membrane``: the potentials
    [B, ...] to start from (contiguous float32), updated in place to those after the last step; None:
    from rest. ``inplace`` (float32 spikes only): the spikes overwrite x, or the contiguous copy of x made
    for a non-contiguous one, and that tensor is returned; x must not be needed after the call (a conv's
    output, as it comes).
    """
    x = x.detach().contiguous()
    rows = (x.shape[0], x.shape[1], -1)  # [T, B, N]
    in_x = inplace and spike_dtype == torch.float32
    spikes = x if in_x else torch.empty(x.shape, dtype=spike_dtype)
    scale, shift = (affine.scale.numpy(), affine.shift.numpy()) if affine else (None, None)
    start = None if membrane is None else membrane.numpy().reshape(x.shape[1], -1)  # [B, N]
    lif_steps(x.numpy().reshape(rows), scale, shift, bool(affine and affine.rounded_once),
              None if shortcut is None else shortcut.detach().contiguous().numpy().reshape(rows),
              np.float32(tau), np.float32(v_th), start, None if in_x else spikes.numpy().reshape(rows))
    return spikes
