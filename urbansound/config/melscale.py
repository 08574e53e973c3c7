"""The Slaney mel scale and the band edges of a mel filterbank, as librosa computes them.

Two layers need this arithmetic: the feature checks (:mod:`urbansound.config.checks`), which
refuse a ``features.n_mels`` that leaves bands without any FFT bin, and the DSP
(:func:`urbansound.features.dsp.mel_basis_t`), which builds the filterbank from the same edges. It
lives here, in the bottom layer, so that a bad config is refused when it is read, without
importing the feature stage or librosa (whose import through numba costs most of a second);
numpy only.

The scale is librosa's default (``htk=False``): linear below 1 kHz, logarithmic above, from
M. Slaney, "Auditory Toolbox", Version 2, Technical Report #1998-010, Interval Research
Corporation, 1998. :func:`hz_to_mel`, :func:`mel_to_hz` and :func:`mel_frequencies` equal
librosa's functions of the same names bit for bit (``tests/features`` compares the filterbank
with ``librosa.filters.mel`` exactly).
"""

from __future__ import annotations

import numpy as np

__all__ = ["empty_mel_bands", "hz_to_mel", "mel_frequencies", "mel_to_hz"]

_F_SP = 200.0 / 3  # Slaney mel scale: linear below 1 kHz (this many Hz a mel), log above
_MIN_LOG_MEL = 1000.0 / _F_SP  # 14.999999999999998, exactly as librosa computes it
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f: float) -> float:
    """Hz -> mel on the Slaney scale (``librosa.hz_to_mel(f, htk=False)``) for one frequency."""
    if f >= 1000.0:
        return _MIN_LOG_MEL + float(np.log(f / 1000.0)) / _LOGSTEP
    return f / _F_SP


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Mel -> Hz on the Slaney scale (``librosa.mel_to_hz(m, htk=False)``), any shape, float64."""
    freqs = _F_SP * m
    log_t = m >= _MIN_LOG_MEL
    freqs[log_t] = 1000.0 * np.exp(_LOGSTEP * (m[log_t] - _MIN_LOG_MEL))
    return freqs


def mel_frequencies(n: int, *, fmin: float, fmax: float) -> np.ndarray:
    """``n`` frequencies in Hz, evenly spaced in mel from ``fmin`` to ``fmax`` (both included).

    ``librosa.mel_frequencies(n, fmin=fmin, fmax=fmax, htk=False)``: float64, shape ``(n,)``. A
    filterbank of ``n_mels`` triangular bands takes ``n_mels + 2`` of them: band ``i`` rises
    from edge ``i``, peaks at edge ``i + 1`` and falls to edge ``i + 2``.
    """
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n))


def empty_mel_bands(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> int:
    """How many of the ``n_mels`` triangular mel bands (librosa's Slaney filterbank, as
    :func:`urbansound.features.dsp.mel_basis_t` builds it) hold no FFT bin.

    Those bands are 0 for every clip: librosa warns "Empty filters detected" for exactly these
    filterbanks. A band is empty when no FFT frequency (``sr`` Hz, ``n_fft`` samples) lies
    strictly between its lower and upper edge; a band whose lower edge is 0 Hz is not counted
    (librosa's rule). Computed from the band edges alone (``searchsorted``), so it costs nothing
    even for absurd sizes.
    """
    freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    edges = mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)
    first = np.searchsorted(freqs, edges[:-2], side="right")  # first bin above the lower edge
    end = np.searchsorted(freqs, edges[2:], side="left")  # first bin at or above the upper edge
    return int(((end <= first) & (edges[:-2] != 0)).sum())
