"""Batched, on-device EEG augmentations for contrastive pre-training (CRL and Hybrid).

Each augmentation maps a batch x (B, C, T) to an augmented batch of the same shape, dtype and
device, drawing per-sample randomness from an optional torch.Generator on x's device. All of
them are pure tensor programs (FFT masks, gathers, searchsorted, linear interpolation): no
per-sample Python loop, no NumPy, no host-device synchronisation, so they run inside the
training step on the GPU instead of in data-loader workers.

    band_stop      zero the rFFT bins in [f0, f0 + bandwidth] Hz, f0 ~ U[min_freq, max_freq]
    time_shift     circular shift (torch.roll) by an integer s ~ U{-S..S}, S = max_shift_s * fs
    zero_masking   zero one contiguous span of 1..floor(max_ratio * T) samples
    time_warp      stretch segment k of n_segments by r_k ~ U[1 - max_stretch, 1 + max_stretch],
                   then resample the warped signal back to T samples (piecewise-linear time map)
    permutation    split into n_segments (np.array_split lengths) and reorder them randomly
    cutout_resize  drop one of n_segments and stretch the rest back to T samples

`Augmenter` applies those present in the config, in the order above, each to a per-sample
Bernoulli(p) subset of the batch (computed for the whole batch, then selected with torch.where:
selecting by index would need the number of chosen samples on the host, i.e. a sync).
"""
from __future__ import annotations

from functools import partial

import torch

from training.config import AUGMENTATION_SCHEMA, AUGMENTATIONS
from utils import ConfigError, fill_defaults, validate


# ----------------------------------------------------------------------------- helpers
def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; lower precisions compute in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _uniform(shape, low: float, high: float, x: torch.Tensor, generator) -> torch.Tensor:
    """U[low, high) of `shape` on x's device in x's working precision."""
    u = torch.rand(shape, generator=generator, device=x.device, dtype=_work_dtype(x))
    return low + (high - low) * u


def _random_below(high: torch.Tensor | int, shape, x: torch.Tensor, generator) -> torch.Tensor:
    """Integers uniform in [0, high) (high may be a per-sample tensor >= 1), int64 of `shape`."""
    u = torch.rand(shape, generator=generator, device=x.device, dtype=torch.float64)
    return torch.minimum((u * high).long(), torch.as_tensor(high, device=x.device) - 1)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, C, T) sampled at integer time indices (B, T') -> (B, C, T')."""
    return x.gather(-1, index.unsqueeze(1).expand(-1, x.shape[1], -1))


def _blend(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Linear interpolation (1 - w) * x[left] + w * x[right]; indices and weights (B, T')."""
    x_left = _take(x, left)
    return x_left + weight.unsqueeze(1) * (_take(x, right) - x_left)


def _interpolate(x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """x (B, C, T) linearly interpolated at fractional positions (B, T') in [0, T - 1]."""
    left = position.floor().long().clamp(0, x.shape[-1] - 2)
    return _blend(x, left, left + 1, position - left)


def _segment_bounds(T: int, n_segments: int, device) -> torch.Tensor:
    """Integer boundaries (n_segments + 1,) of an equal split of T samples (np.array_split sizes)."""
    if n_segments > T:
        raise ValueError(f"n_segments={n_segments} exceeds the {T} samples of an epoch")
    return torch.arange(n_segments + 1, device=device) * T // n_segments


# ----------------------------------------------------------------------------- augmentations
def band_stop(x, generator=None, *, fs: int, min_freq: float, max_freq: float, bandwidth: float):
    """Zero the spectrum of each sample in a random band [f0, f0 + bandwidth] Hz (rFFT mask)."""
    B, T = x.shape[0], x.shape[-1]
    work = _work_dtype(x)
    spectrum = torch.fft.rfft(x.to(work), dim=-1)  # (B, C, T // 2 + 1)
    freqs = torch.fft.rfftfreq(T, d=1.0 / fs, device=x.device, dtype=work)
    low = _uniform((B, 1, 1), min_freq, max_freq, x, generator)
    stop = (freqs >= low) & (freqs <= low + bandwidth)
    return torch.fft.irfft(spectrum.masked_fill(stop, 0), n=T, dim=-1).to(x.dtype)


def time_shift(x, generator=None, *, fs: int, max_shift_s: float):
    """Circularly shift each sample by s ~ U{-S..S} samples: out[t] = x[(t - s) mod T]."""
    B, T = x.shape[0], x.shape[-1]
    max_shift = round(max_shift_s * fs)
    shift = torch.randint(-max_shift, max_shift + 1, (B, 1), generator=generator, device=x.device)
    return _take(x, (torch.arange(T, device=x.device) - shift) % T)


def zero_masking(x, generator=None, *, fs: int, max_ratio: float):
    """Zero one contiguous span of 1..floor(max_ratio * T) samples per sample (none if that is 0)."""
    B, T = x.shape[0], x.shape[-1]
    max_length = int(max_ratio * T)
    length = torch.clamp(_random_below(max_length, (B, 1), x, generator) + 1, max=max_length) if max_length \
        else torch.zeros(B, 1, dtype=torch.long, device=x.device)
    start = _random_below(T - length + 1, (B, 1), x, generator)
    t = torch.arange(T, device=x.device)
    return x.masked_fill(((t >= start) & (t < start + length)).unsqueeze(1), 0)


def time_warp(x, generator=None, *, fs: int, n_segments: int, max_stretch: float):
    """Stretch/compress each of n_segments by a random factor, then resample back to T samples.

    Segment k (input span [k, k + 1] * (T - 1) / n) gets output length proportional to
    r_k ~ U[1 - max_stretch, 1 + max_stretch]; the output-to-input time map is piecewise linear
    and increasing, and the signal is read from it by linear interpolation.
    """
    B, T = x.shape[0], x.shape[-1]
    work = _work_dtype(x)
    stretch = _uniform((B, n_segments), 1 - max_stretch, 1 + max_stretch, x, generator)
    knots_out = torch.nn.functional.pad(stretch.cumsum(1), (1, 0))
    knots_out = knots_out * ((T - 1) / knots_out[:, -1:])  # (B, n + 1), from 0 to T - 1
    t = torch.arange(T, device=x.device, dtype=work).expand(B, T).contiguous()
    segment = (torch.searchsorted(knots_out, t, right=True) - 1).clamp(0, n_segments - 1)
    start_out, end_out = knots_out.gather(1, segment), knots_out.gather(1, segment + 1)
    step_in = (T - 1) / n_segments
    position = step_in * (segment + (t - start_out) / (end_out - start_out))
    return _interpolate(x.to(work), position).to(x.dtype)


def permutation(x, generator=None, *, fs: int, n_segments: int):
    """Split into n_segments and put them in a random order (a new order per sample)."""
    B, T = x.shape[0], x.shape[-1]
    bounds = _segment_bounds(T, n_segments, x.device)
    order = torch.rand(B, n_segments, generator=generator, device=x.device).argsort(dim=1)  # slot -> segment
    lengths = (bounds[1:] - bounds[:-1])[order]
    slot_start = lengths.cumsum(1) - lengths  # (B, n): where each slot begins in the output
    t = torch.arange(T, device=x.device).expand(B, T).contiguous()
    slot = torch.searchsorted(slot_start, t, right=True) - 1
    source = bounds[order.gather(1, slot)] + t - slot_start.gather(1, slot)
    return _take(x, source)


def cutout_resize(x, generator=None, *, fs: int, n_segments: int):
    """Remove one random segment of n_segments and stretch the remaining samples back to T.

    The kept samples, joined, form a sequence of K = T - len(cut) samples; output sample t reads
    it at position t (K - 1) / (T - 1) by linear interpolation.
    """
    B, T = x.shape[0], x.shape[-1]
    work = _work_dtype(x)
    bounds = _segment_bounds(T, n_segments, x.device)
    cut = torch.randint(0, n_segments, (B, 1), generator=generator, device=x.device)
    cut_start, cut_length = bounds[cut], bounds[cut + 1] - bounds[cut]  # (B, 1)
    kept = T - cut_length
    position = torch.arange(T, device=x.device, dtype=work) * ((kept - 1) / (T - 1))  # (B, T)
    left = position.floor().long().clamp(max=kept - 2)

    def original(index):  # index into the kept sequence -> index into x
        return index + cut_length * (index >= cut_start)

    return _blend(x.to(work), original(left), original(left + 1), position - left).to(x.dtype)


AUGMENTATION_FUNCTIONS = {
    "band_stop": band_stop,
    "time_shift": time_shift,
    "zero_masking": zero_masking,
    "time_warp": time_warp,
    "permutation": permutation,
    "cutout_resize": cutout_resize,
}


# ----------------------------------------------------------------------------- composition
class Augmenter:
    """The augmentations named in `aug_cfg` (config["ssl"]["params"]["augmentations"]).

    `aug_cfg` maps a name of AUGMENTATION_SCHEMA to its parameters (missing ones take the schema
    defaults); a name absent from it, or with p = 0, is not applied. Call with x (B, C, T).
    """

    def __init__(self, aug_cfg: dict, fs: int = 100):
        problems = [f"ssl.params.augmentations.{name}: unknown augmentation (known: {', '.join(AUGMENTATIONS)})"
                    for name in aug_cfg if name not in AUGMENTATION_SCHEMA]
        problems += validate({k: v for k, v in aug_cfg.items() if k in AUGMENTATION_SCHEMA}, AUGMENTATION_SCHEMA,
                             "ssl.params.augmentations")
        band = fill_defaults(aug_cfg.get("band_stop", {}), AUGMENTATION_SCHEMA["band_stop"])
        if not problems and band["min_freq"] > band["max_freq"]:
            problems.append(f"ssl.params.augmentations.band_stop: min_freq {band['min_freq']} > max_freq "
                            f"{band['max_freq']}")
        if problems:
            raise ConfigError(problems)
        self.steps = []  # (name, p, augmentation)
        for name in AUGMENTATIONS:
            if name in aug_cfg:
                params = fill_defaults(aug_cfg[name], AUGMENTATION_SCHEMA[name])
                p = params.pop("p")
                if p > 0:
                    self.steps.append((name, p, partial(AUGMENTATION_FUNCTIONS[name], fs=fs, **params)))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (B, C, T) floating point -> augmented copy, same shape/dtype/device."""
        if x.ndim != 3 or not x.is_floating_point():
            raise ValueError(f"Augmenter expects a floating (B, C, T) batch, got {x.dtype} {tuple(x.shape)}")
        if generator is not None and generator.device.type != x.device.type:
            raise ValueError(f"generator is on {generator.device}, the batch on {x.device}")
        for _, p, augment in self.steps:
            augmented = augment(x, generator)
            if p < 1:
                chosen = torch.rand(x.shape[0], 1, 1, generator=generator, device=x.device) < p
                augmented = torch.where(chosen, augmented, x)
            x = augmented
        return x

    def __repr__(self) -> str:
        return "Augmenter(" + ", ".join(f"{name}(p={p})" for name, p, _ in self.steps) + ")"
