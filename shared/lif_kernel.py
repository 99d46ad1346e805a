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
Every operation being correctly rounded and none reassociated (LLVM vectorizes across neurons only),
the loops give the same bits on any CPU numba compiles them for: tests/shared/test_portable_kernels.py
compares a build for a generic x86-64 (no AVX, no FMA instruction) with this CPU's.

The loop is plain numba, single-threaded (no ``parallel``): it never competes with torch's intra-op
threads. It compiles on first use, once per process and argument types; ``cache=True`` keeps the
machine code on disk next to this file or, where that is read-only (an installed package), in the
user's cache directory. An entry is reused while this file's size and time stamp stay the same, and it records
the module's import name (``spikebottlenet.shared.lif_kernel``): entries written when it was imported under
another name cannot be loaded, so a change of that name must come with a change to this file.

Training has loops of its own below (``lif_train_forward`` / ``lif_train_backward``, and with a train-mode
tdBN ``lif_norm_train_forward`` / ``lif_norm_train_backward``), which shared/lif_autograd.py wraps in
autograd Functions: the same arithmetic, and the gradient autograd takes through the reference's graph.
They are single-threaded too: training on CPU runs torch's convs with its intra-op threads, and a loop
split across the same cores takes turns with them and with whatever else runs. Measured on a 2-core
machine with one core busy, ``lif_train_forward`` as a prange over chunks of neurons took as long as this
loop with numba's one thread, and 1.8 times as long with two.
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
                u[: stop - start] = zero
            else:
                u[: stop - start] = membrane[b, start:stop]
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
                membrane[b, start:stop] = u[: stop - start]


def runs_in_kernel(x: torch.Tensor, shortcut: torch.Tensor | None) -> bool:
    """Whether ``lif_pass`` takes these tensors: float32 on the CPU, not empty, the shortcut shaped as x."""
    tensors = (x,) if shortcut is None else (x, shortcut)
    return (
        x.dim() >= 2
        and x.numel() > 0
        and (shortcut is None or shortcut.shape == x.shape)
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    )


def lif_pass(
    x: torch.Tensor,
    tau: float,
    v_th: float,
    affine: ChannelAffine | None = None,
    shortcut: torch.Tensor | None = None,
    membrane: torch.Tensor | None = None,
    spike_dtype: torch.dtype = torch.float32,
    inplace: bool = False,
) -> torch.Tensor:
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
    lif_steps(
        x.numpy().reshape(rows),
        scale,
        shift,
        bool(affine and affine.rounded_once),
        None if shortcut is None else shortcut.detach().contiguous().numpy().reshape(rows),
        np.float32(tau),
        np.float32(v_th),
        start,
        None if in_x else spikes.numpy().reshape(rows),
    )
    return spikes


# --- training: the T-step loop of charge / fire / reset as one pass forward and one pass backward ---
#
# The autograd Function around these (shared/lif_autograd.py) runs them under autograd, where the
# reference runs its T steps as tensor operations and autograd records about a dozen nodes per step.
# Neurons are independent, so each loop below takes a chunk of neurons at a time through all T steps,
# innermost over neighbours in memory (it vectorizes), as ``lif_steps`` does.


@compiled
def lif_train_forward(current, tau, v_th, spikes, membrane):
    """The spikes [T, N] of the LIF driven by ``current`` [T, N] from rest, and ``membrane`` [T, N]: the
    potential h[t] of each step before its reset, all the backward pass needs (float32, all of them).

    The arithmetic is the reference's (``LIF.step_by_step``), rounded as it rounds: h = fl(fl(tau * u) + I),
    s = h >= v_th, u = h * (1 - s).
    """
    time_steps, neurons = current.shape
    chunk = min(neurons, MEMBRANE_CHUNK)
    u = np.empty(chunk, np.float32)  # the post-reset potentials of one chunk of neurons
    one, zero = np.float32(1), np.float32(0)
    for start in range(0, neurons, chunk):
        stop = min(start + chunk, neurons)
        u[: stop - start] = zero
        for t in range(time_steps):
            current_t, spikes_t, membrane_t = current[t, start:stop], spikes[t, start:stop], membrane[t, start:stop]
            for n in range(stop - start):
                h = tau * u[n] + current_t[n]  # charge
                s = one if h >= v_th else zero  # fire
                spikes_t[n] = s
                membrane_t[n] = h
                u[n] = h * (one - s)  # reset


@compiled
def lif_train_backward(grad_spikes, membrane, tau, v_th, half_width, width, grad_current):
    """dL/dI [T, N] into ``grad_current``, given dL/ds ``grad_spikes`` [T, N] and the forward's ``membrane`` [T, N].

    Backwards in time, the gradient autograd takes through the reference's graph, rounded as it rounds it.
    With h[t] the potential before the reset, s[t] = H(h[t] - v_th), u[t] = h[t] * (1 - s[t]) and
    h[t + 1] = tau * u[t] + I[t + 1]:

        dL/du[t] = dL/dh[t + 1] * tau                           (charge's MulBackward; nothing at t = T - 1)
        dL/ds[t] = dL/ds[t] from the output + -(dL/du[t] * h[t])  (the reset's product, through 1 - s)
        dL/dh[t] = dL/ds[t] * window(h[t]) / a + dL/du[t] * (1 - s[t])   (surrogate + the reset's other factor)
        dL/dI[t] = dL/dh[t]

    where window(h) = |h - v_th| < a / 2 (1 or 0). Each sum has two terms, which IEEE addition adds the same
    way in either order, so autograd's order of accumulating them does not matter. The last step's u has no
    use, so there autograd runs no reset backward: the loop starts with the surrogate term alone (a product
    0 * h would make an infinite h's gradient NaN where autograd's is not).
    """
    time_steps, neurons = membrane.shape
    chunk = min(neurons, MEMBRANE_CHUNK)
    one, zero = np.float32(1), np.float32(0)
    last = time_steps - 1
    for start in range(0, neurons, chunk):
        stop = min(start + chunk, neurons)
        grad_t, membrane_t = grad_spikes[last, start:stop], membrane[last, start:stop]
        out_t = grad_current[last, start:stop]
        for n in range(stop - start):
            window = one if abs(membrane_t[n] - v_th) < half_width else zero
            out_t[n] = grad_t[n] * window / width
        for t in range(last - 1, -1, -1):
            grad_t, membrane_t = grad_spikes[t, start:stop], membrane[t, start:stop]
            out_t, next_t = grad_current[t, start:stop], grad_current[t + 1, start:stop]  # next_t: dL/dh[t + 1]
            for n in range(stop - start):
                h = membrane_t[n]
                s = one if h >= v_th else zero
                grad_u = next_t[n] * tau
                grad_s = grad_t[n] - grad_u * h
                window = one if abs(h - v_th) < half_width else zero
                out_t[n] = grad_s * window / width + grad_u * (one - s)


# --- training with the tdBN before the neuron: batch statistics, normalization and LIF in one pass ---
#
# A train-mode tdBN normalizes with the batch's own statistics, so its output is known only after a pass
# over all of its input. The statistics are taken as ATen's batch-norm kernel takes them for a contiguous
# [T * B, C, H, W] input (batch_norm_cpu_collect_stats_contiguous_impl): per channel, a float64 sum in
# (t, b, h, w) order, the mean rounded to float32, then a float64 sum of the float32 squares (x - mean)^2.
# The normalization x * scale + shift, the residual add and the T steps then run in one loop
# (``lif_norm_train_forward``), which writes only the spikes; the backward recomputes the potentials from
# x, which the tdBN's backward reads anyway, and takes the tdBN's per-channel sums in the same pass.
#
# x is seen as [T, B, P]: the P = C * S neurons of a sample, channel after channel (S = H * W each). As in
# ``lif_steps``, the loops take a chunk of P at a time, spread the per-channel constants over its neurons
# once, and run every sample of the batch through it.


@compiled
def channel_stats(x, mean, var_sum):
    """Per channel of x [R, C, S] (R = T * B rows): the float32 mean and sum of squared deviations, as ATen's
    batch norm takes them (see above). The channels' sums run side by side, each in its own order: a float64
    addition waits for the one before it, the next channel's does not."""
    rows, channels, size = x.shape
    count = rows * size
    total = np.zeros(channels, np.float64)
    for r in range(rows):
        for s in range(size):
            for c in range(channels):
                total[c] += x[r, c, s]
    for c in range(channels):
        mean[c] = np.float32(total[c] / count)
    squares = np.zeros(channels, np.float64)
    for r in range(rows):
        for s in range(size):
            for c in range(channels):
                d = x[r, c, s] - mean[c]
                squares[c] += d * d
    for c in range(channels):
        var_sum[c] = np.float32(squares[c])


@compiled
def spread_over_neurons(values, start, stop, size, out):
    """out[n] = values[(start + n) // size] for n < stop - start: a per-channel value for each neuron of a chunk."""
    for c in range(start // size, (stop - 1) // size + 1):
        out[max(c * size, start) - start : min((c + 1) * size, stop) - start] = values[c]


@compiled
def gather_over_neurons(values, start, stop, size, out):
    """out[(start + n) // size] += values[n] (float64) for n < stop - start: ``spread_over_neurons`` reversed."""
    for c in range(start // size, (stop - 1) // size + 1):
        total = 0.0
        for n in range(max(c * size, start) - start, min((c + 1) * size, stop) - start):
            total += values[n]
        out[c] += total


@compiled
def lif_norm_train_forward(x, size, scale, shift, rounded_once, shortcut, tau, v_th, spikes):
    """spikes [T, B, P] of the LIF driven by I = x * scale[c] + shift[c] (+ shortcut), x and shortcut [T, B, P],
    c = p // size (see above). The map is rounded once (a fused multiply-add) or after the multiply and again
    after the add, as ATen's kernel rounds it."""
    time_steps, batch, neurons = x.shape
    chunk = min(neurons, MEMBRANE_CHUNK)
    u = np.empty(chunk, np.float32)
    neuron_scale, neuron_shift = np.empty(chunk, np.float32), np.empty(chunk, np.float32)
    one, zero = np.float32(1), np.float32(0)
    for start in range(0, neurons, chunk):
        stop = min(start + chunk, neurons)
        spread_over_neurons(scale, start, stop, size, neuron_scale)
        spread_over_neurons(shift, start, stop, size, neuron_shift)
        for b in range(batch):
            u[: stop - start] = zero
            for t in range(time_steps):
                x_t, spikes_t = x[t, b, start:stop], spikes[t, b, start:stop]
                shortcut_t = shortcut[t, b, start:stop] if shortcut is not None else None
                for n in range(stop - start):
                    if rounded_once:
                        current = fused_multiply_add(x_t[n], neuron_scale[n], neuron_shift[n])
                    else:
                        current = x_t[n] * neuron_scale[n] + neuron_shift[n]
                    if shortcut is not None:
                        current = current + shortcut_t[n]
                    h = tau * u[n] + current
                    s = one if h >= v_th else zero
                    spikes_t[n] = s
                    u[n] = h * (one - s)


@compiled
def lif_norm_train_backward(
    grad_spikes,
    x,
    size,
    scale,
    shift,
    rounded_once,
    shortcut,
    mean,
    tau,
    v_th,
    half_width,
    width,
    grad_current,
    grad_sum,
    grad_dot,
):
    """dL/dI [T, B, P] into ``grad_current`` for the LIF of ``lif_norm_train_forward``, and per channel the
    float64 sums of dL/dI and of (x - mean) * dL/dI (what the tdBN's backward reduces) into ``grad_sum`` and
    ``grad_dot`` [C]. The potentials are recomputed from x, a chunk of neurons at a time; the gradient is
    ``lif_train_backward``'s, rounded as autograd rounds it through the reference's graph (dL/dh[t + 1] is
    read back from ``grad_current``). Each neuron's terms are summed over its T steps in float32, those sums
    over the batch and the channel in float64.

    Each inner loop writes one or two arrays: a loop that writes more, next to as many it reads, needs more
    run-time checks that they do not overlap than LLVM will emit, and stays scalar."""
    time_steps, batch, neurons = x.shape
    chunk = min(neurons, MEMBRANE_CHUNK)
    u = np.empty(chunk, np.float32)
    membrane = np.empty((time_steps, chunk), np.float32)  # h[t] of the chunk, recomputed
    step_sum, step_dot = np.empty(chunk, np.float32), np.empty(chunk, np.float32)
    neuron_scale, neuron_shift = np.empty(chunk, np.float32), np.empty(chunk, np.float32)
    neuron_mean = np.empty(chunk, np.float32)
    neuron_sum, neuron_dot = np.empty(chunk, np.float64), np.empty(chunk, np.float64)
    one, zero = np.float32(1), np.float32(0)
    last = time_steps - 1
    for start in range(0, neurons, chunk):
        stop = min(start + chunk, neurons)
        width_n = stop - start
        spread_over_neurons(scale, start, stop, size, neuron_scale)
        spread_over_neurons(shift, start, stop, size, neuron_shift)
        spread_over_neurons(mean, start, stop, size, neuron_mean)
        neuron_sum[:width_n] = 0.0
        neuron_dot[:width_n] = 0.0
        for b in range(batch):
            u[:width_n] = zero
            for t in range(time_steps):  # the forward again, keeping h
                x_t, membrane_t = x[t, b, start:stop], membrane[t]
                shortcut_t = shortcut[t, b, start:stop] if shortcut is not None else None
                for n in range(width_n):
                    if rounded_once:
                        current = fused_multiply_add(x_t[n], neuron_scale[n], neuron_shift[n])
                    else:
                        current = x_t[n] * neuron_scale[n] + neuron_shift[n]
                    if shortcut is not None:
                        current = current + shortcut_t[n]
                    h = tau * u[n] + current
                    membrane_t[n] = h
                    u[n] = h * (one - (one if h >= v_th else zero))
            step_sum[:width_n] = zero
            step_dot[:width_n] = zero
            for t in range(last, -1, -1):
                grad_t, membrane_t, out_t = grad_spikes[t, b, start:stop], membrane[t], grad_current[t, b, start:stop]
                if t == last:  # no reset backward (see lif_train_backward)
                    for n in range(width_n):
                        window = one if abs(membrane_t[n] - v_th) < half_width else zero
                        out_t[n] = grad_t[n] * window / width
                else:
                    next_t = grad_current[t + 1, b, start:stop]
                    for n in range(width_n):
                        h = membrane_t[n]
                        s = one if h >= v_th else zero
                        grad_u = next_t[n] * tau
                        grad_s = grad_t[n] - grad_u * h
                        window = one if abs(h - v_th) < half_width else zero
                        out_t[n] = grad_s * window / width + grad_u * (one - s)
                x_t = x[t, b, start:stop]
                for n in range(width_n):
                    step_sum[n] += out_t[n]
                    step_dot[n] += (x_t[n] - neuron_mean[n]) * out_t[n]
            for n in range(width_n):
                neuron_sum[n] += step_sum[n]
                neuron_dot[n] += step_dot[n]
        gather_over_neurons(neuron_sum, start, stop, size, grad_sum)
        gather_over_neurons(neuron_dot, start, stop, size, grad_dot)


@compiled
def batch_norm_train_grad_input(grad_output, x, size, mean, k, grad_mean, invstd, weight, grad_input):
    """The train-mode batch norm's dL/dx [T, B, P] = (dy - grad_mean[c] - (x - mean[c]) * k[c]) * invstd[c] *
    weight[c], ATen's formula, with k = dot * invstd^2 / N and grad_mean = sum / N per channel. ``grad_input``
    None: into ``grad_output`` (the same array passed twice would fail LLVM's check that they do not overlap,
    and the loop would not vectorize)."""
    time_steps, batch, neurons = x.shape
    chunk = min(neurons, MEMBRANE_CHUNK)
    neuron_mean, neuron_k = np.empty(chunk, np.float32), np.empty(chunk, np.float32)
    neuron_grad_mean, neuron_invstd = np.empty(chunk, np.float32), np.empty(chunk, np.float32)
    neuron_weight = np.empty(chunk, np.float32)
    for start in range(0, neurons, chunk):
        stop = min(start + chunk, neurons)
        spread_over_neurons(mean, start, stop, size, neuron_mean)
        spread_over_neurons(k, start, stop, size, neuron_k)
        spread_over_neurons(grad_mean, start, stop, size, neuron_grad_mean)
        spread_over_neurons(invstd, start, stop, size, neuron_invstd)
        spread_over_neurons(weight, start, stop, size, neuron_weight)
        for b in range(batch):
            for t in range(time_steps):
                x_t, dy_t = x[t, b, start:stop], grad_output[t, b, start:stop]
                if grad_input is None:
                    for n in range(stop - start):
                        centred = (x_t[n] - neuron_mean[n]) * neuron_k[n]
                        dy_t[n] = (dy_t[n] - neuron_grad_mean[n] - centred) * neuron_invstd[n] * neuron_weight[n]
                else:
                    dx_t = grad_input[t, b, start:stop]
                    for n in range(stop - start):
                        centred = (x_t[n] - neuron_mean[n]) * neuron_k[n]
                        dx_t[n] = (dy_t[n] - neuron_grad_mean[n] - centred) * neuron_invstd[n] * neuron_weight[n]
