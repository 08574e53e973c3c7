"""Synthesis of the demo corpus's audio: one slice of one of the ten classes.

Every class has two functions: ``_rec_<class>(rng)`` draws a synthetic recording's sound
parameters, and ``_<class>(params, rng, n, sr)`` returns a mono float64 signal of ``n`` samples at
``sr``. Recording-level parameters (drawn once per synthetic recording, shared by its slices)
carry most of the variation, so that the folds, which group recordings, test generalisation.
:func:`draw_recording` draws a recording's parameters and scene (background, interfering source,
microphone, gain), :func:`synth_slice` renders one slice of it in its file's format.
:mod:`urbansound.data.demo` plans the corpus and writes the files.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import next_fast_len

from urbansound.data.layout import CLASS_NAMES

_SYNTH_SR = 22050  # synthesis rate; files at higher rates are resampled up

# --------------------------------------------------------------------------------------------
# DSP helpers


def _spectral(x: np.ndarray, sr: int, gain) -> np.ndarray:
    """Filter ``x`` by a zero-phase gain curve ``gain(freqs_hz)``."""
    spec = np.fft.rfft(x)
    return np.fft.irfft(spec * gain(np.fft.rfftfreq(len(x), 1.0 / sr)), n=len(x))


def _band(lo: float, hi: float, slope: int = 4):
    """A smooth band-pass gain curve between ``lo`` and ``hi`` Hz (slope 2 or 4)."""

    def gain(f: np.ndarray) -> np.ndarray:
        f = np.maximum(f, 1.0)
        low, high = (lo / f) ** 2, (f / hi) ** 2
        if slope == 4:
            low, high = low * low, high * high
        return 1.0 / ((1.0 + low) * (1.0 + high))

    return gain


def _noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """Gaussian noise band-limited to ``lo``..``hi`` Hz, unit variance (drawn as a spectrum)."""
    bins = n // 2 + 1
    spec = rng.standard_normal(bins) + 1j * rng.standard_normal(bins)
    x = np.fft.irfft(spec * _band(lo, hi)(np.fft.rfftfreq(n, 1.0 / sr)), n=n)
    return x / (np.std(x) + 1e-12)


def _harmonic(
    f0: np.ndarray | float, sr: int, n: int, amps: np.ndarray, phase0: float = 0.0
) -> np.ndarray:
    """Sum of harmonics k*f0 (k = 1..len(amps)) with a time-varying f0, below Nyquist."""
    f0 = np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / sr + phase0
    fmax = float(f0.max())
    # sin(k x) by the Chebyshev recurrence: one np.sin/np.cos per call instead of one per harmonic
    two_cos = 2.0 * np.cos(phase)
    prev, cur = np.zeros(n), np.sin(phase)
    out = np.zeros(n)
    for k, a in enumerate(amps, start=1):
        if k * fmax >= 0.45 * sr:
            break
        if a:
            out += a * cur
        prev, cur = cur, two_cos * cur - prev
    return out


def _rolloff(k: int, tilt: float, odd_boost: float = 0.0) -> np.ndarray:
    h = np.arange(1, k + 1, dtype=np.float64)
    a = h**-tilt
    a[::2] *= 1.0 + odd_boost
    return a


def _segments(
    rng: np.random.Generator, n: int, sr: int, count: int, dur: tuple[float, float]
) -> np.ndarray:
    """An on/off envelope with ``count`` segments of random length, soft edges."""
    env = np.zeros(n)
    ramp = max(1, int(0.01 * sr))
    for _ in range(count):
        length = max(2 * ramp + 1, int(rng.uniform(*dur) * sr))
        start = int(rng.integers(0, max(1, n - length // 2)))
        stop = min(n, start + length)
        seg = np.ones(stop - start)
        r = min(ramp, len(seg) // 2)
        if r:
            seg[:r] = np.linspace(0, 1, r)
            seg[-r:] = np.linspace(1, 0, r)
        env[start:stop] = np.maximum(env[start:stop], seg)
    return env


def _decays(n: int, sr: int, onsets: np.ndarray, tau: float) -> np.ndarray:
    """Sum of exponential decays starting at ``onsets`` (seconds), time constant ``tau``."""
    t = np.arange(min(n, max(2, int(8 * tau * sr)))) / sr
    kernel = np.exp(-t / tau) * (1.0 - np.exp(-t / 0.002))
    env = np.zeros(n)
    for i in (np.asarray(onsets) * sr).astype(int):
        if 0 <= i < n:
            stop = min(n, i + len(kernel))
            env[i:stop] += kernel[: stop - i]
    return env


# --------------------------------------------------------------------------------------------
# The ten classes, in classID order (see _GENERATORS)


def _rec_air_conditioner(r: np.random.Generator) -> dict:
    return {
        "lo": r.uniform(40, 150),
        "hi": r.uniform(600, 4000),
        "hum_f0": r.uniform(40, 140),
        "hum": r.uniform(0.05, 0.6),
        "tilt": r.uniform(0.8, 2.0),
        "am_rate": r.uniform(0.2, 3.0),
        "am_depth": r.uniform(0.0, 0.25),
    }


def _air_conditioner(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    x = _noise(r, n, sr, p["lo"], p["hi"])
    x += p["hum"] * _harmonic(p["hum_f0"], sr, n, _rolloff(8, p["tilt"]), r.uniform(0, 6.3))
    return x * (1 + p["am_depth"] * np.sin(2 * np.pi * p["am_rate"] * t + r.uniform(0, 6.3)))


def _rec_car_horn(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(300, 650),
        "second": r.uniform(1.15, 1.35) if r.random() < 0.5 else 0.0,
        "tilt": r.uniform(0.3, 1.2),
        "odd": r.uniform(0.0, 1.5),
        "honks": int(r.integers(2, 4)),
        "dur": (r.uniform(0.3, 0.8), r.uniform(1.0, 2.5)),
    }


def _car_horn(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    f0 = p["f0"] * (1 + 0.01 * r.standard_normal())
    amps = _rolloff(14, p["tilt"], p["odd"])
    x = _harmonic(f0, sr, n, amps)
    if p["second"]:
        x += 0.8 * _harmonic(f0 * p["second"], sr, n, amps, 1.0)
    x = np.tanh(3.0 * x / (np.abs(x).max() + 1e-12))
    return x * _segments(r, n, sr, p["honks"], p["dur"])


def _rec_children_playing(r: np.random.Generator) -> dict:
    return {
        "voices": int(r.integers(2, 5)),
        "pitch": r.uniform(250, 450),
        "formant": r.uniform(700, 1600),
        "crowd": r.uniform(0.1, 0.7),
        "tilt": r.uniform(0.6, 1.4),
    }


def _children_playing(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    x = p["crowd"] * _noise(r, n, sr, 300, 3500)
    h = np.arange(1, 11)
    for _ in range(p["voices"]):
        base = p["pitch"] * r.uniform(0.8, 1.3)
        glide = base * (1 + 0.25 * np.sin(2 * np.pi * r.uniform(0.2, 1.5) * t + r.uniform(0, 6.3)))
        f0 = glide * (1 + 0.03 * np.sin(2 * np.pi * r.uniform(4, 7) * t))
        formant = p["formant"] * r.uniform(0.8, 1.25)
        amps = h ** -p["tilt"] * (1 + 2.5 * np.exp(-(((h * base - formant) / 400.0) ** 2)))
        env = _segments(r, n, sr, int(r.integers(2, 5)), (0.4, 1.8))
        x += r.uniform(0.3, 1.0) * _harmonic(f0, sr, n, amps, r.uniform(0, 6.3)) * env
    return x


def _rec_dog_bark(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(350, 900),
        "fall": r.uniform(0.1, 0.5),
        "breath": r.uniform(0.4, 1.2),
        "len": r.uniform(0.12, 0.4),
        "barks": int(r.integers(3, 9)),
        "formant": r.uniform(800, 2500),
    }


def _dog_bark(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    x = np.zeros(n)
    count = max(1, p["barks"] + int(r.integers(-1, 2)))
    length = int(p["len"] * sr)
    tt = np.arange(length) / sr
    h = np.arange(1, 13)
    for _ in range(count):
        start = int(r.uniform(0, max(1e-3, n / sr - p["len"])) * sr)
        seg = min(length, n - start)
        if seg <= 8:
            continue
        f0 = p["f0"] * r.uniform(0.9, 1.1) * (1 - p["fall"] * tt[:seg] / p["len"])
        amps = 1.0 / h * (1 + 2 * np.exp(-(((h * p["f0"] - p["formant"]) / 500.0) ** 2)))
        voiced = _harmonic(f0, sr, seg, amps)
        noisy = _noise(r, seg, sr, 400, 5000)
        env = np.sin(np.pi * tt[:seg] / (seg / sr)) ** 0.5 * np.exp(-3 * tt[:seg] / p["len"])
        x[start : start + seg] += env * (voiced / (np.std(voiced) + 1e-9) + p["breath"] * noisy)
    return x


def _rec_drilling(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(700, 2500),
        "tilt": r.uniform(0.6, 1.8),
        "band": (r.uniform(500, 2000), r.uniform(2500, 8000)),
        "noise": r.uniform(0.5, 2.0),
        "am_rate": r.uniform(10, 60),
        "am_depth": r.uniform(0.1, 0.9),
        "pauses": r.random() < 0.4,
    }


def _drilling(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = p["f0"] * (1 + 0.02 * np.sin(2 * np.pi * r.uniform(0.3, 2) * t))
    x = _harmonic(f0, sr, n, _rolloff(10, p["tilt"]), r.uniform(0, 6.3))
    x = x / (np.std(x) + 1e-9) + p["noise"] * _noise(r, n, sr, *p["band"])
    x *= 1 + p["am_depth"] * np.sin(2 * np.pi * p["am_rate"] * t)
    if p["pauses"]:
        x *= np.maximum(_segments(r, n, sr, 2, (0.8, 2.5)), 0.05)
    return x


def _rec_engine_idling(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(25, 90),
        "tilt": r.uniform(0.5, 1.5),
        "harmonics": int(r.integers(8, 30)),
        "noise": r.uniform(0.2, 1.2),
        "hi": r.uniform(400, 3000),
        "chug": r.uniform(0.1, 0.7),
    }


def _engine_idling(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = p["f0"] * (1 + 0.02 * np.sin(2 * np.pi * r.uniform(0.1, 1.0) * t))
    x = _harmonic(f0, sr, n, _rolloff(p["harmonics"], p["tilt"]), r.uniform(0, 6.3))
    x = x / (np.std(x) + 1e-9) + p["noise"] * _noise(r, n, sr, 30, p["hi"])
    return x * (1 + p["chug"] * np.sin(2 * np.pi * p["f0"] / 2 * t))


def _rec_gun_shot(r: np.random.Generator) -> dict:
    return {
        "tau": r.uniform(0.01, 0.15),
        "tail": r.uniform(0.15, 0.9),
        "tail_level": r.uniform(0.05, 0.5),
        "boom": r.uniform(0.2, 1.5),
        "band": (r.uniform(50, 400), r.uniform(2000, 9000)),
        "shots": int(r.integers(1, 5)),
    }


def _gun_shot(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    dur = n / sr
    count = max(1, p["shots"] + int(r.integers(-1, 2)))
    onsets = np.sort(r.uniform(0, max(1e-3, dur * 0.8), count))
    blast = _decays(n, sr, onsets, p["tau"])
    tail = _decays(n, sr, onsets, p["tail"])
    noise = _noise(r, n, sr, *p["band"])
    boom = _noise(r, n, sr, 30, 200)
    return blast * (noise + p["boom"] * boom) + p["tail_level"] * tail * _noise(r, n, sr, 80, 2000)


def _rec_jackhammer(r: np.random.Generator) -> dict:
    return {
        "rate": r.uniform(10, 30),
        "tau": r.uniform(0.005, 0.03),
        "band": (r.uniform(300, 1500), r.uniform(2000, 7000)),
        "hum_f0": r.uniform(60, 300),
        "hum": r.uniform(0.0, 0.5),
        "floor": r.uniform(0.05, 0.4),
        "pauses": r.random() < 0.4,
    }


def _jackhammer(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    dur = n / sr
    period = 1.0 / (p["rate"] * r.uniform(0.95, 1.05))
    onsets = np.arange(r.uniform(0, period), dur, period)
    onsets = onsets + r.normal(0, 0.05 * period, len(onsets))
    env = _decays(n, sr, onsets, p["tau"]) + p["floor"]
    x = env * _noise(r, n, sr, *p["band"])
    x += p["hum"] * _harmonic(p["hum_f0"], sr, n, _rolloff(6, 1.0), r.uniform(0, 6.3))
    if p["pauses"]:
        x *= np.maximum(_segments(r, n, sr, 2, (0.8, 2.5)), 0.05)
    return x


def _rec_siren(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(500, 1400),
        "depth": r.uniform(0.15, 0.45),
        "rate": r.uniform(0.15, 5.0),
        "shape": r.uniform(0, 1),
        "tilt": r.uniform(0.8, 2.5),
        "hi": r.uniform(1500, 8000),
    }


def _siren(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    ph = 2 * np.pi * p["rate"] * t + r.uniform(0, 6.3)
    sweep = (1 - p["shape"]) * np.sin(ph) + p["shape"] * (2 / np.pi) * np.arcsin(np.sin(ph))
    f0 = p["f0"] * (1 + p["depth"] * sweep)
    x = _harmonic(f0, sr, n, _rolloff(8, p["tilt"]))
    return _spectral(x, sr, _band(100, p["hi"], 2))


_SCALE = np.array([0, 2, 3, 5, 7, 9, 10, 12])


def _rec_street_music(r: np.random.Generator) -> dict:
    return {
        "f0": r.uniform(110, 440),
        "note": r.uniform(0.15, 0.6),
        "tilt": r.uniform(0.6, 2.0),
        "odd": r.uniform(0.0, 1.0),
        "chord": int(r.integers(1, 4)),
        "drums": r.uniform(0, 0.8),
        "bpm": r.uniform(80, 160),
    }


def _street_music(p: dict, r: np.random.Generator, n: int, sr: int) -> np.ndarray:
    dur = n / sr
    steps = max(1, int(np.ceil(dur / p["note"])))
    notes = _SCALE[r.integers(0, len(_SCALE), steps)]
    idx = np.minimum((np.arange(n) / sr / p["note"]).astype(int), steps - 1)
    x = np.zeros(n)
    amps = _rolloff(10, p["tilt"], p["odd"])
    for v in range(p["chord"]):
        f0 = p["f0"] * 2 ** ((notes[idx] + (0, 4, 7)[v]) / 12)
        x += _harmonic(f0, sr, n, amps, r.uniform(0, 6.3))
    pos = (np.arange(n) / sr) % p["note"]
    x *= np.exp(-pos / (0.5 * p["note"])) * 0.8 + 0.2
    if p["drums"]:
        beats = np.arange(r.uniform(0, 0.2), dur, 60.0 / p["bpm"])
        x = x / (np.std(x) + 1e-9)
        x += p["drums"] * 3 * _decays(n, sr, beats, 0.05) * _noise(r, n, sr, 40, 6000)
    return x


_GENERATORS = (
    (_rec_air_conditioner, _air_conditioner),
    (_rec_car_horn, _car_horn),
    (_rec_children_playing, _children_playing),
    (_rec_dog_bark, _dog_bark),
    (_rec_drilling, _drilling),
    (_rec_engine_idling, _engine_idling),
    (_rec_gun_shot, _gun_shot),
    (_rec_jackhammer, _jackhammer),
    (_rec_siren, _siren),
    (_rec_street_music, _street_music),
)


# --------------------------------------------------------------------------------------------
# One slice


def _rec_scene(r: np.random.Generator, class_id: int) -> dict:
    """Recording-level scene: background noise, interfering source, SNR, microphone, gain."""
    other = int(r.integers(0, len(CLASS_NAMES) - 1))
    other += other >= class_id
    return {
        "bg_lo": r.uniform(20, 200),
        "bg_hi": r.uniform(1000, 8000),
        "snr_db": r.uniform(3.0, 24.0),
        "other": other if r.random() < 0.35 else None,
        "other_db": r.uniform(-24.0, -10.0),
        "other_params": _GENERATORS[other][0](r),
        "mic_lo": r.uniform(20, 150),
        "mic_hi": r.uniform(5000, 11000),
        "gain": r.uniform(0.15, 0.9),
        "width": r.uniform(0.0, 0.4),
    }


def synth_slice(row: dict, rec: dict, scene: dict, seed: int) -> np.ndarray:
    """One slice's audio (frames x channels) at the row's sample rate.

    Synthesised at up to 22.05 kHz, then filtered by the recording's microphone curve and
    resampled to the file's rate in one FFT. Lengths are rounded up to FFT-friendly sizes (the
    surplus is cut at the end), so 48/96 kHz files and odd durations cost little more than others.
    """
    r = np.random.default_rng([seed, int(row["classID"]), int(row["rec"]), int(row["slice"]) + 1])
    sr = int(row["sr"])
    base = min(sr, _SYNTH_SR)
    g = math.gcd(sr, base)
    up, down = sr // g, base // g
    dur = float(row["end"] - row["start"])
    n_out = max(16, round(dur * sr))
    k = next_fast_len(-(-max(16, round(dur * base)) // down), real=True)
    n, n_up = down * k, up * k
    c = int(row["classID"])
    fg = _GENERATORS[c][1](rec, r, n, base)
    fg = fg / (np.sqrt(np.mean(fg**2)) + 1e-12)
    bg = _noise(r, n, base, scene["bg_lo"], scene["bg_hi"]) * 10 ** (-scene["snr_db"] / 20)
    if scene["other"] is not None:
        o = _GENERATORS[scene["other"]][1](scene["other_params"], r, n, base)
        bg += o / (np.sqrt(np.mean(o**2)) + 1e-12) * 10 ** (scene["other_db"] / 20)
    x = (fg + bg)[None, :]
    if int(row["channels"]) == 2:
        side = _noise(r, n, base, scene["bg_lo"], scene["bg_hi"]) * 10 ** (-scene["snr_db"] / 20)
        x = np.stack([x[0] + scene["width"] * side, x[0] - scene["width"] * side])
    spec = np.fft.rfft(x, axis=1)
    spec *= _band(scene["mic_lo"], min(scene["mic_hi"], 0.45 * base), 2)(
        np.fft.rfftfreq(n, 1.0 / base)
    )
    if n_up != n:
        padded = np.zeros((x.shape[0], n_up // 2 + 1), dtype=complex)
        keep = min(spec.shape[1], padded.shape[1])
        padded[:, :keep] = spec[:, :keep]
        spec = padded
    y = np.fft.irfft(spec, n=n_up, axis=1).T[:n_out]
    return y * (scene["gain"] / (np.abs(y).max() + 1e-12))


def draw_recording(r: np.random.Generator, class_id: int) -> tuple[dict, dict]:
    """A synthetic recording of class ``class_id``: its sound parameters and its scene
    (:func:`_rec_scene`), both drawn from ``r`` in this order."""
    return _GENERATORS[class_id][0](r), _rec_scene(r, class_id)
