"""Decode, downmix and resample clips exactly as ``librosa.load`` does.

:func:`load_audio` reads a file with soundfile (libsndfile), averages its channels to mono and
resamples it with soxr in high quality ("HQ", librosa's default ``res_type="soxr_hq"``), then
fixes the length to ``ceil(n * sr / sr_native)`` samples, as ``librosa.resample`` does: the same
operations in the same order, so the result is bitwise ``librosa.load(path, sr=sr)[0]`` on every
clip of the UrbanSound8K sample and of the demo corpus (8-bit unsigned, 16- and 24-bit PCM,
WAVE_FORMAT_EXTENSIBLE, float, mono to 6 channels; the tests require 1e-5). 8- and 16-bit files
are decoded as integers and scaled in numpy, which is exact and twice as fast as libsndfile's
float conversion.

Unlike ``librosa.load`` it never falls back to audioread (deprecated there), and it refuses
files that carry no audio: an empty or non-audio file, a WAV whose data chunk is cut short
(libsndfile reads such files silently, up to where they end; so is an AIFF, AU, CAF, W64, RF64
or VOC file cut short), a file with no samples and one
whose samples are not all finite (a float WAV holding a NaN or an infinity, which ``librosa.load``
refuses too) all raise :class:`~urbansound.errors.AudioError` naming the file. So do the files
``librosa.load`` fails on with another exception: codecs libsndfile decodes only as a stream
(GSM 6.10, G.72x, NMS ADPCM: soundfile's ValueError) and headerless RAW files (its TypeError).

A WAV written to a pipe (ffmpeg, sox) carries placeholder sizes in its header (RIFF and data
size 0xFFFFFFFF, or sox's 0x7FFFF000): it is read to its end, exactly as ``librosa.load`` reads
it. A data size of 0 (another streaming writer's placeholder) holds no samples for libsndfile nor
for ``librosa.load``: an error that says how to rewrite the header.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from urbansound.errors import AudioError

# Subtypes whose float samples are int16 values times 2**-15 (see _int16_mono), in the containers
# that hold exactly that many bits (SDS, the MIDI sample dump, stores 16-bit PCM with up to 21
# bits, which libsndfile's float read keeps and its int16 read truncates: those go the float way).
_INT16_EXACT = frozenset({"PCM_16", "PCM_U8", "PCM_S8"})
_INT16_CONTAINERS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "FLAC"})
# Subtypes whose samples are integers, finite whatever the file holds (others are checked).
_INTEGER = _INT16_EXACT | {"PCM_24", "PCM_32", "ULAW", "ALAW"}
# libsndfile logs an audio data chunk declared longer than the file as "data : 460404 (should be
# 956)" (WAV, CAF), " SSND : 44108 (should be 22031)" (AIFF), "Data Size : 44100 (should be
# 22038)" (AU); an RF64 cut short as "Calculated frame count 5499 does not match value from 'ds64'
# chunk of 11025"; a VOC as "Seems to be a truncated file". A W64's data chunk size (24-byte chunk
# header included) is logged without a correction: compared with what was read.
_SHORT_DATA = re.compile(
    r"^\s*(?:data|SSND|Data Size)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE
)
_SHORT_DS64 = re.compile(
    r"Calculated frame count (\d+) does not match value from 'ds64' chunk of (\d+)"
)
_SHORT_VOC = "Seems to be a truncated file"
_W64_DATA = re.compile(r"^data\s*:\s*(\d+)\s*$", re.MULTILINE)
_BLOCK_ALIGN = re.compile(r"Block Align\s*:\s*(\d+)")
_EMPTY_DATA = re.compile(r"^data\s*:\s*0\s*$", re.MULTILINE)
# A program writing a WAV to a pipe cannot go back to fill in the sizes, so it writes a
# placeholder: ffmpeg 0xFFFFFFFF, sox 0x7FFFF000 rounded down to the block size (other streaming
# writers and containers: 0x7F000000 and up). A declared data size this large is such a
# placeholder (the samples run to the end of the file, which is how libsndfile and librosa.load
# read it), not a file cut short.
_STREAMED_DATA_SIZE = 0x7F000000
_UNKNOWN_FRAMES = 2**62  # libsndfile's frame count when a header gives none (SF_COUNT_MAX)


def _mp3_length_tag(path: str | Path) -> bool:
    """Whether an MP3 declares its length (a Xing, Info or VBRI tag in its first frame).

    Without one, libsndfile's frame count is an estimate from the file size and the first
    frame's bitrate (off by thousands of frames for VBR/ABR files, by a few for CBR ones), so
    reading fewer frames than it says does not mean the file was cut short: ``librosa.load``
    reads such whole files, and so must we.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(10)
            start = 0
            if head[:3] == b"ID3" and len(head) == 10:  # skip an ID3v2 tag (synchsafe size)
                size = 0
                for b in head[6:10]:
                    size = (size << 7) | (b & 0x7F)
                start = 10 + size + (10 if head[5] & 0x10 else 0)
            fh.seek(start)
            frame = fh.read(4096)
    except OSError:
        return True
    return any(tag in frame[:200] for tag in (b"Xing", b"Info", b"VBRI"))


def _truncated(info: str, fmt: str, n_read: int) -> str | None:
    """Why a file whose header declares more audio than it holds is truncated, or None.

    libsndfile reads such a file silently up to where it ends (so does ``librosa.load``); a clip
    cut short is a bad clip here in every container, not only in WAV.
    """
    short = _SHORT_DATA.search(info)
    if short is not None and int(short.group(2)) < int(short.group(1)) < _STREAMED_DATA_SIZE:
        return (
            f"the file is truncated (its header declares {short.group(1)} bytes of audio data, "
            f"it holds {short.group(2)})"
        )
    ds64 = _SHORT_DS64.search(info)
    if ds64 is not None and int(ds64.group(1)) < int(ds64.group(2)) < _STREAMED_DATA_SIZE // 8:
        return f"the file is truncated (read {ds64.group(1)} of {ds64.group(2)} frames)"
    if fmt == "VOC" and _SHORT_VOC in info:
        return f"the file is truncated (read {n_read} frames)"
    if fmt == "W64":
        data, align = _W64_DATA.search(info), _BLOCK_ALIGN.search(info)
        if data is not None and align is not None and int(align.group(1)) > 0:
            # The size counts the 24-byte chunk header and is padded to a multiple of 8.
            payload = int(data.group(1)) - 24
            if payload - n_read * int(align.group(1)) >= 8 and payload < _STREAMED_DATA_SIZE:
                declared = payload // int(align.group(1))
                return f"the file is truncated (read {n_read} of about {declared} frames)"
    return None


#: The most samples soxr resamples to in one call: past 2**31 - 1 it crashes the process
#: (a segmentation fault, found with 100 000 samples declared at 1 Hz: 2.2e9 at 22 050 Hz).
_MAX_SAMPLES = 2**31 - 1


def _too_long(frames: int, native_sr: int, sr: int) -> str:
    hours = frames / native_sr / 3600
    return (
        f"it is too long to decode at once ({frames} samples at {native_sr} Hz, {hours:.3g} h, "
        f"would be {math.ceil(frames * sr / native_sr)} samples at {sr} Hz; at most "
        f"{_MAX_SAMPLES}); split it into shorter files (or check its sample rate)"
    )


#: What to do, at the end of every AudioError message.
HINT = "; replace or remove the file, or set features.on_error=skip to leave it out"


def audio_error(path: str | Path, reason: str) -> AudioError:
    """The error for an unreadable clip: one line naming the file, the reason and what to do."""
    return AudioError(f"cannot decode audio file {path}: {reason}{HINT}")


def _reason(path: str | Path, exc: BaseException) -> str:
    """Say why soundfile could not read ``path`` in a few words."""
    p = Path(path)
    if not p.exists():
        return "no such file"
    if not p.is_file():
        return "not a regular file"
    if p.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    if isinstance(exc, MemoryError):
        return f"not enough memory to decode it ({p.stat().st_size} bytes on disk)"
    msg = str(exc).replace(f"Error opening {str(path)!r}: ", "").strip().rstrip(".")
    return msg or type(exc).__name__


def load_audio(path: str | Path, *, sr: int) -> np.ndarray:
    """Load one clip as mono float32 at ``sr`` Hz, equal to ``librosa.load(path, sr=sr)[0]``.

    Parameters
    ----------
    path:
        An audio file soundfile can read.
    sr:
        Target sample rate in Hz.

    Returns
    -------
    numpy.ndarray
        1-D float32 samples in [-1, 1].

    Raises
    ------
    AudioError
        The file is missing, empty, truncated, holds no samples, holds a non-finite sample or
        is not audio.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        pass  # missing or unreachable: soundfile's error below is turned into the reason
    else:
        if not stat.S_ISREG(mode):
            # A FIFO would block the open until a writer comes (forever, for a stale one), and
            # neither a pipe nor a device can be read to its end by soundfile or librosa.load.
            kind = "a pipe" if stat.S_ISFIFO(mode) else None
            raise audio_error(
                path,
                "not a regular file"
                + (f" ({kind}); write the audio to a file first" if kind else ""),
            )
    try:
        with sf.SoundFile(str(path)) as f:
            if not f.seekable():
                # GSM 6.10, G.72x, NMS ADPCM, DPCM: libsndfile decodes these only as a stream,
                # and soundfile (so librosa.load too) refuses to read a stream to its end.
                raise audio_error(
                    path,
                    f"libsndfile decodes its {f.format} {f.subtype} audio only as a stream, which "
                    "librosa.load cannot read either; convert it to PCM (`sox IN OUT.wav` or "
                    "`ffmpeg -i IN OUT.wav`)",
                )
            native_sr = f.samplerate
            declared = f.frames
            if declared >= _UNKNOWN_FRAMES:
                # libsndfile's "unknown length" (SF_COUNT_MAX): a FLAC written to a pipe leaves
                # its STREAMINFO sample count 0. soundfile (so librosa.load) then tries to
                # allocate that many frames and fails with "array is too big".
                raise audio_error(
                    path,
                    f"its {f.format} header does not say how many samples it holds (written to "
                    "a pipe?), and librosa.load cannot read it either; re-encode it to a file "
                    "(`ffmpeg -i IN.flac OUT.flac`)",
                )
            if math.ceil(declared * sr / native_sr) > _MAX_SAMPLES:
                raise audio_error(path, _too_long(declared, native_sr, sr))
            as_int16 = f.subtype in _INT16_EXACT and f.format in _INT16_CONTAINERS
            integer = f.subtype in _INTEGER
            y = f.read(dtype="int16" if as_int16 else "float32", always_2d=True)
            info = f.extra_info
            fmt = f.format
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, MemoryError) as exc:
        raise audio_error(path, _reason(path, exc)) from None
    except TypeError as exc:  # soundfile: a headerless (RAW) file needs a sample rate and format
        raise audio_error(
            path,
            f"{exc} (a headerless RAW file has no sample rate or sample format to decode it "
            "with; librosa.load cannot read it either); convert it to WAV",
        ) from None
    truncated = _truncated(info, fmt, y.shape[0])
    if truncated is not None:
        raise audio_error(path, truncated)
    if y.shape[0] == 0:
        if _EMPTY_DATA.search(info) and Path(path).stat().st_size > 64:
            raise audio_error(
                path,
                "it holds no audio samples: its data chunk declares 0 bytes, though the file goes "
                "on (a WAV streamed to a pipe whose header was never completed; librosa.load "
                "reads no samples from it either); rewrite it with "
                "`sox --ignore-length IN.wav OUT.wav`",
            )
        raise audio_error(path, "it holds no audio samples")
    if y.shape[0] < declared and (fmt != "MP3" or _mp3_length_tag(path)):
        raise audio_error(path, f"the file is truncated (read {y.shape[0]} of {declared} frames)")
    if not integer and not np.isfinite(y).all():
        # librosa.load refuses these (librosa.util.valid_audio: "Audio buffer is not finite
        # everywhere"); only float files can hold them, and one NaN makes every feature NaN.
        bad = ~np.isfinite(y)
        raise audio_error(
            path,
            f"{int(bad.sum())} audio samples are not finite (NaN or infinite; the first at "
            f"{int(np.argmax(bad.any(axis=1))) / native_sr:.3f} s); librosa.load refuses it too",
        )
    return _resample(_int16_mono(y) if as_int16 else _float_mono(y), native_sr, sr)


def _int16_mono(y: np.ndarray) -> np.ndarray:
    """Mono float32 from 16-bit (or 8-bit) samples, bitwise equal to the float path below.

    libsndfile's float samples are ``int16 * 2**-15`` (8-bit ones ``(u8 - 128) * 2**-7``, which
    it also returns as ``int16`` shifted left by 8): exact in float32, and so is their float32 sum
    over channels (at most 24 significant bits), so summing integers, then scaling, then dividing
    by the channel count rounds exactly where librosa's float mean does. Converting in numpy
    rather than in libsndfile halves the decoding time.
    """
    total = y[:, 0].astype(np.int32)
    for c in range(1, y.shape[1]):  # column by column: a reduction along axis 1 is 10x slower
        total += y[:, c]
    mono = total.astype(np.float32)
    mono *= np.float32(2.0**-15)
    if y.shape[1] > 1:
        mono /= np.float32(y.shape[1])
    return mono


def _float_mono(y: np.ndarray) -> np.ndarray:
    """Average channels with librosa's float32 operations in librosa's order."""
    n_channels = y.shape[1]
    if n_channels == 1:
        mono = y[:, 0]
    else:
        # np.mean over the channel axis of librosa's (channels, n) array: a float32 running sum
        # over channels divided by their count. Column slices avoid a slow strided reduction.
        mono = y[:, 0] + y[:, 1]
        for c in range(2, n_channels):
            mono += y[:, c]
        mono /= np.float32(n_channels)
    return mono


def _resample(mono: np.ndarray, native_sr: int, sr: int) -> np.ndarray:
    """``librosa.resample(mono, orig_sr=native_sr, target_sr=sr)`` with its default soxr_hq."""
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if native_sr == sr:
        return mono
    out = soxr.resample(mono, native_sr, sr, quality="soxr_hq")
    ratio = float(sr) / native_sr
    n_out = math.ceil(mono.shape[0] * ratio)  # librosa.resample's fix_length
    if out.shape[0] > n_out:
        out = out[:n_out]
    elif out.shape[0] < n_out:
        out = np.pad(out, (0, n_out - out.shape[0]))
    return np.asarray(out, dtype=np.float32)
