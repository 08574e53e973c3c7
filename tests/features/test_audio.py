"""Tests of urbansound.features.audio.

Decoding equal to librosa.load, and one-line errors for unreadable files.
"""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from urbansound.errors import AudioError
from urbansound.features.audio import load_audio


def _librosa_load(path: Path | str, sr: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's own deprecation notes, not ours
        return librosa.load(path, sr=sr)[0]


def _real_clips(root: Path) -> list[Path]:
    return sorted((root / "audio").glob("fold*/*.wav"))


@pytest.mark.slow
def test_every_real_clip_loads_equal_to_librosa(real_root: Path) -> None:
    clips = _real_clips(real_root)
    assert len(clips) >= 100
    formats = collections.Counter()
    for path in clips:
        info = sf.info(path)
        formats[(info.subtype, info.samplerate, info.channels)] += 1
        ours = load_audio(path, sr=22050)
        ref = _librosa_load(path, 22050)
        assert ours.dtype == np.float32 and ours.ndim == 1
        assert ours.shape == ref.shape, path
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5, err_msg=str(path))
    subtypes = {k[0] for k in formats}
    # The sample holds what the issue names: 8-bit unsigned, 24-bit extensible, stereo 48 kHz.
    assert {"PCM_U8", "PCM_16", "PCM_24"} <= subtypes
    assert any(sr == 48000 and ch == 2 for _, sr, ch in formats)


@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
def test_other_rates_equal_librosa(real_root: Path, sr: int) -> None:
    by_format = {}
    for path in _real_clips(real_root):
        info = sf.info(path)
        by_format.setdefault((info.subtype, info.samplerate, info.channels), path)
    for path in by_format.values():
        ours = load_audio(path, sr=sr)
        ref = _librosa_load(path, sr)
        assert ours.shape == ref.shape, path
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5, err_msg=str(path))


@pytest.mark.parametrize(
    ("subtype", "channels", "native_sr", "fmt"),
    [
        ("FLOAT", 3, 32000, "WAV"),
        ("PCM_24", 6, 44100, "WAV"),
        ("PCM_U8", 1, 11025, "WAV"),
        ("PCM_U8", 2, 11025, "WAV"),
        ("PCM_16", 2, 22050, "WAV"),
        ("PCM_16", 6, 48000, "WAV"),
        ("PCM_S8", 3, 16000, "AIFF"),
    ],
)
def test_written_formats_equal_librosa(
    tmp_path: Path, subtype: str, channels: int, native_sr: int, fmt: str
) -> None:
    rng = np.random.default_rng(channels)
    x = (0.3 * rng.standard_normal((native_sr // 2, channels))).clip(-1, 1)
    path = tmp_path / f"clip_{subtype}.{fmt.lower()}"
    sf.write(path, x, native_sr, subtype=subtype, format=fmt)
    ours = load_audio(path, sr=22050)
    ref = _librosa_load(path, 22050)
    assert ours.shape == ref.shape
    if subtype in ("PCM_16", "PCM_U8", "PCM_S8"):
        # Decoded as integers and scaled in numpy: exact arithmetic, so bitwise librosa's.
        np.testing.assert_array_equal(ours, ref)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def _wav(path: Path, n: int = 22050) -> Path:
    sf.write(path, np.sin(np.arange(n) / 10.0) * 0.5, 22050, subtype="PCM_16")
    return path


def test_short_and_silent_clips_load(tmp_path: Path) -> None:
    one = tmp_path / "one.wav"
    sf.write(one, np.array([0.25]), 22050, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(one, sr=22050), np.array([0.25], np.float32))
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(1000), 44100, subtype="PCM_16")
    y = load_audio(silent, sr=22050)
    assert y.shape == (500,) and not y.any()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
        (lambda p: p.write_text("this is not audio\n" * 20), "Format not recognised"),
        (lambda p: p.write_bytes(_wav(p).read_bytes()[:3000]), "the file is truncated"),
        (lambda p: p.write_bytes(_wav(p).read_bytes()[:44]), "the file is truncated"),
        (lambda p: p.write_bytes(_wav(p).read_bytes()[:20]), "Malformed"),
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "not a regular file"),
    ],
    ids=["empty", "text", "truncated", "header-only", "cut-header", "missing", "directory"],
)
def test_unreadable_files_raise_audio_error_naming_the_file(tmp_path: Path, make, reason) -> None:
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as err:
        load_audio(path, sr=22050)
    msg = str(err.value)
    assert str(path) in msg and reason in msg and "features.on_error=skip" in msg
    assert "\n" not in msg


def test_wav_with_no_samples_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros((0, 1)), 22050, subtype="PCM_16")
    with pytest.raises(AudioError, match="holds no audio samples"):
        load_audio(path, sr=22050)


@pytest.mark.parametrize(
    ("where", "value", "channels", "subtype"),
    [
        (100, np.nan, 1, "FLOAT"),
        (0, np.inf, 1, "FLOAT"),
        (4999, -np.inf, 1, "FLOAT"),
        (2500, np.nan, 2, "FLOAT"),  # one channel of a stereo file
        (7, np.inf, 1, "DOUBLE"),
    ],
    ids=["nan", "+inf", "-inf", "nan-in-one-channel", "double-inf"],
)
@pytest.mark.parametrize("sr", [22050, 16000])
def test_non_finite_samples_are_refused_like_librosa(
    tmp_path: Path, where: int, value: float, channels: int, subtype: str, sr: int
) -> None:
    x = np.full((5000, channels), 0.1)
    x[where, 0] = value
    path = tmp_path / "nan.wav"
    sf.write(path, x, 22050, subtype=subtype)
    with pytest.raises(librosa.util.exceptions.ParameterError, match="not finite"):
        _librosa_load(path, sr)
    with pytest.raises(AudioError) as err:
        load_audio(path, sr=sr)
    msg = str(err.value)
    assert str(path) in msg and "1 audio samples are not finite" in msg
    assert f"first at {where / 22050:.3f} s" in msg and "features.on_error=skip" in msg


def _patched_wav(path: Path, *, riff=None, data=None, tail=b"", subtype="PCM_16", ch=1) -> Path:
    """A WAV with its RIFF and/or data chunk sizes overwritten, as a program streaming it wrote."""
    import io
    import struct

    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    x = (0.3 * rng.standard_normal((7001, ch))).clip(-1, 1)
    sf.write(buf, x, 44100, subtype=subtype, format="WAV")
    raw = bytearray(buf.getvalue())
    at = raw.index(b"data")
    if riff is not None:
        raw[4:8] = struct.pack("<I", riff)
    if data is not None:
        raw[at + 4 : at + 8] = struct.pack("<I", data)
    path.write_bytes(bytes(raw) + tail)
    return path


@pytest.mark.parametrize(
    "kw",
    [
        dict(riff=0xFFFFFFFF, data=0xFFFFFFFF),  # ffmpeg to a pipe
        dict(riff=0xFFFFFFFF, data=0xFFFFFFFF, subtype="PCM_24", ch=2),
        dict(riff=0xFFFFFFFF, data=0xFFFFFFFF, subtype="FLOAT"),
        dict(riff=0, data=0xFFFFFFFF),
        dict(riff=0x7FFFF000 + 36, data=0x7FFFF000),  # sox to a pipe
        dict(riff=0xFFFFFFFF, data=0xFFFFFFFF, tail=b"\x01"),  # odd byte count
        dict(riff=12345),  # RIFF size wrong, data size right
        dict(riff=0xFFFFFFFF),
        dict(tail=b"LIST\x09\x00\x00\x00abcdefghi\x00"),  # odd-sized trailing chunk
        dict(tail=b"xyz"),  # trailing junk
    ],
    ids=[
        "ffmpeg-pipe",
        "ffmpeg-pipe-24bit-stereo",
        "ffmpeg-pipe-float",
        "riff0-data-ffff",
        "sox-pipe",
        "pipe-odd-bytes",
        "riff-wrong",
        "riff-ffff",
        "odd-trailing-chunk",
        "trailing-junk",
    ],
)
@pytest.mark.parametrize("sr", [44100, 22050])
def test_streamed_and_odd_headers_load_exactly_as_librosa(tmp_path: Path, kw: dict, sr: int):
    path = _patched_wav(tmp_path / "streamed.wav", **kw)
    ref = _librosa_load(path, sr)
    assert ref.shape == (7001 if sr == 44100 else 3501,)
    np.testing.assert_array_equal(load_audio(path, sr=sr), ref)


def test_streamed_wav_with_data_size_0_says_how_to_fix_it(tmp_path: Path) -> None:
    path = _patched_wav(tmp_path / "zero.wav", riff=0xFFFFFFFF, data=0)
    assert _librosa_load(path, 22050).shape == (0,)  # librosa reads no samples either
    with pytest.raises(AudioError) as err:
        load_audio(path, sr=22050)
    msg = str(err.value)
    assert str(path) in msg and "declares 0 bytes" in msg and "sox --ignore-length" in msg


def test_truncated_wav_with_a_real_size_is_still_refused(tmp_path: Path) -> None:
    full = _patched_wav(tmp_path / "full.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(AudioError, match="the file is truncated"):
        load_audio(cut, sr=22050)


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [
        ("WAV", "GSM610", "wav"),
        ("WAV", "G721_32", "wav"),
        ("WAV", "NMS_ADPCM_16", "wav"),
        ("AU", "G723_24", "au"),
        ("AIFF", "GSM610", "aiff"),
        ("W64", "GSM610", "w64"),
    ],
)
def test_stream_only_codecs_are_refused_like_librosa(
    tmp_path: Path, fmt: str, subtype: str, ext: str
) -> None:
    # libsndfile opens these as non-seekable; soundfile (so librosa.load) raises a ValueError
    # on reading them, which must not escape as a traceback.
    path = tmp_path / f"clip.{ext}"
    sf.write(path, 0.3 * np.sin(np.arange(8000) / 7.0), 8000, subtype=subtype, format=fmt)
    with pytest.raises(ValueError, match="non-seekable"):
        _librosa_load(path, 22050)
    with pytest.raises(AudioError) as err:
        load_audio(path, sr=22050)
    msg = str(err.value)
    assert str(path) in msg and f"{fmt} {subtype}" in msg and "only as a stream" in msg
    assert "features.on_error=skip" in msg and "\n" not in msg


def test_headerless_raw_file_is_refused_like_librosa(tmp_path: Path) -> None:
    path = tmp_path / "clip.raw"
    path.write_bytes((np.arange(4000, dtype=np.int16) * 7).tobytes())
    with pytest.raises(TypeError):
        _librosa_load(path, 22050)
    with pytest.raises(AudioError) as err:
        load_audio(path, sr=22050)
    msg = str(err.value)
    assert str(path) in msg and "headerless RAW" in msg and "\n" not in msg


def test_sds_16_bit_holding_more_bits_equals_librosa(tmp_path: Path) -> None:
    # SDS stores "16-bit" PCM with up to 21 bits: libsndfile's int16 read truncates them, so the
    # integer fast path would differ from librosa's float read by up to 3e-5.
    path = tmp_path / "clip.sds"
    x = (0.3 * np.random.default_rng(5).standard_normal(5000)).clip(-1, 1)
    sf.write(path, x, 22050, subtype="PCM_16", format="SDS")
    for sr in (22050, 16000):
        np.testing.assert_array_equal(load_audio(path, sr=sr), _librosa_load(path, sr))


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    import os
    import threading

    path = tmp_path / "pipe.wav"
    os.mkfifo(path)
    result: dict = {}

    def load() -> None:
        try:
            load_audio(path, sr=22050)
        except AudioError as exc:
            result["error"] = str(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # before: soundfile's open waited for a writer forever
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(30)
        pytest.fail("load_audio blocked on a FIFO")
    assert str(path) in result["error"] and "not a regular file (a pipe)" in result["error"]


_CONTAINERS = [
    ("AIFF", "PCM_16", "aiff"),
    ("AIFF", "PCM_24", "aiff"),
    ("AU", "PCM_16", "au"),
    ("AU", "FLOAT", "au"),
    ("W64", "PCM_16", "w64"),
    ("RF64", "PCM_16", "rf64"),
    ("CAF", "PCM_16", "caf"),
    ("VOC", "PCM_16", "voc"),
    ("WAVEX", "PCM_24", "wav"),
]


@pytest.mark.parametrize(("fmt", "subtype", "ext"), _CONTAINERS)
@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_a_clip_cut_short_is_refused_in_every_container(
    tmp_path: Path, fmt: str, subtype: str, ext: str, keep: float
) -> None:
    # libsndfile (and so librosa.load) reads a file cut short silently up to where it ends;
    # a truncated WAV was refused, a truncated AIFF, AU, W64, RF64 or VOC gave features of
    # part of the clip without a word.
    import io

    buf = io.BytesIO()
    x = (0.3 * np.random.default_rng(4).standard_normal((11025, 2))).clip(-1, 1)
    sf.write(buf, x, 22050, subtype=subtype, format=fmt)
    raw = buf.getvalue()
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(AudioError) as err:
        load_audio(path, sr=22050)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    # (libsndfile itself refuses a CAF cut before the end of its chunk table)
    assert "the file is truncated" in msg or (fmt == "CAF" and "malformed" in msg)


@pytest.mark.parametrize(("fmt", "subtype", "ext"), _CONTAINERS)
def test_whole_clips_of_any_length_are_not_taken_for_truncated(
    tmp_path: Path, fmt: str, subtype: str, ext: str
) -> None:
    rng = np.random.default_rng(6)
    for n, channels in [(1, 1), (37, 2), (1001, 3), (4099, 1)]:
        path = tmp_path / f"whole{n}.{ext}"
        channels = min(channels, 2) if fmt == "VOC" else channels  # VOC holds 1 or 2
        sf.write(path, 0.2 * rng.standard_normal((n, channels)), 22050, subtype=subtype, format=fmt)
        np.testing.assert_allclose(
            load_audio(path, sr=16000), _librosa_load(path, 16000), rtol=0, atol=1e-5
        )


@pytest.mark.parametrize(
    ("fmt", "chunk", "offset", "pack"),
    [("AU", b".snd", 8, ">I"), ("AIFF", b"SSND", 4, ">I")],
    ids=["au-unknown-size", "aiff-placeholder"],
)
def test_streamed_aiff_and_au_placeholders_load_like_librosa(
    tmp_path: Path, fmt: str, chunk: bytes, offset: int, pack: str
) -> None:
    # A data size this large is a streaming writer's placeholder (AU's 0xFFFFFFFF "unknown"),
    # read to the end of the file as libsndfile and librosa.load do, not a file cut short.
    import io
    import struct

    buf = io.BytesIO()
    x = (0.3 * np.random.default_rng(8).standard_normal(7001)).clip(-1, 1)
    sf.write(buf, x, 22050, subtype="PCM_16", format=fmt)
    raw = bytearray(buf.getvalue())
    at = raw.index(chunk) + offset
    raw[at : at + 4] = struct.pack(pack, 0xFFFFFFFF if fmt == "AU" else 0x7F000008)
    path = tmp_path / f"streamed.{fmt.lower()}"
    path.write_bytes(bytes(raw))
    ref = _librosa_load(path, 22050)
    assert ref.shape == (7001,)
    np.testing.assert_array_equal(load_audio(path, sr=22050), ref)


def _mp3(path: Path, *, mode: str, length_tag: bool, id3: bytes = b"") -> Path:
    rng = np.random.default_rng(0)
    x = np.concatenate([0.001 * rng.standard_normal(44100), 0.5 * rng.standard_normal(44100)])
    sf.write(
        path,
        x,
        22050,
        format="MP3",
        subtype="MPEG_LAYER_III",
        bitrate_mode=mode,
        compression_level=0.5,
    )
    raw = bytearray(path.read_bytes())
    if not length_tag:  # an encoder that writes no Xing/Info tag (or a stream cut from a radio)
        for tag in (b"Xing", b"Info"):
            at = raw.find(tag, 0, 2000)
            if at >= 0:
                raw[at : at + 4] = b"\0\0\0\0"
    path.write_bytes(id3 + bytes(raw))
    return path


def _id3v2(payload_size: int) -> bytes:
    size = bytes((payload_size >> s) & 0x7F for s in (21, 14, 7, 0))  # synchsafe
    return b"ID3\x04\x00\x00" + size + b"\0" * payload_size


@pytest.mark.parametrize("mode", ["CONSTANT", "AVERAGE"])
def test_whole_mp3_without_a_length_tag_loads_like_librosa(tmp_path: Path, mode: str) -> None:
    # libsndfile's frame count of such a file is an estimate from its size (CBR: 77 frames too
    # many, ABR: 22 000): it was refused as "truncated", though whole and read by librosa.load.
    path = _mp3(tmp_path / "whole.mp3", mode=mode, length_tag=False)
    with sf.SoundFile(path) as f:
        assert f.frames > _librosa_load(path, 22050).shape[0]  # the estimate is too high
    np.testing.assert_allclose(
        load_audio(path, sr=22050), _librosa_load(path, 22050), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("id3", [b"", _id3v2(3000)], ids=["plain", "id3v2"])
def test_mp3_with_a_length_tag_cut_short_is_still_refused(tmp_path: Path, id3: bytes) -> None:
    whole = _mp3(tmp_path / "whole.mp3", mode="CONSTANT", length_tag=True, id3=id3)
    np.testing.assert_allclose(
        load_audio(whole, sr=22050), _librosa_load(whole, 22050), rtol=0, atol=1e-5
    )
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(AudioError, match="the file is truncated"):
        load_audio(cut, sr=22050)


def test_flac_without_a_sample_count_is_refused_like_librosa(tmp_path: Path) -> None:
    # A FLAC written to a pipe leaves STREAMINFO's total sample count 0: soundfile then reports
    # 2**63 - 1 frames and librosa.load fails on "array is too big".
    import io

    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(np.arange(22050) / 9.0), 22050, subtype="PCM_16", format="FLAC")
    raw = bytearray(buf.getvalue())
    info = 8  # "fLaC" + the STREAMINFO block header
    word = int.from_bytes(raw[info + 10 : info + 18], "big") & ~((1 << 36) - 1)
    raw[info + 10 : info + 18] = word.to_bytes(8, "big")  # total samples (36 bits) = 0
    path = tmp_path / "streamed.flac"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="too big"):
        _librosa_load(path, 22050)
    with pytest.raises(AudioError) as err:
        load_audio(path, sr=22050)
    msg = str(err.value)
    assert str(path) in msg and "does not say how many samples it holds" in msg
