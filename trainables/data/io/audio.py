"""Audio front-ends: WAV reading, the OGM-GE log-STFT, Kaldi fbank, and safe feature-file loading.

WAV files are read with the standard library's ``wave`` module: torchaudio 2.11's ``load`` needs
torchcodec, and CREMA-D's WAVs are plain PCM. Resampling uses ``torchaudio.functional.resample``
(windowed sinc); OGM-GE resamples with librosa (soxr), so values differ slightly from the official
features, shapes do not.
"""

from __future__ import annotations

import functools
import io
import pickle
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.data.io.lists import Sample, SampleError


def read_wav(path: Path, where: str = "") -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate of a PCM WAV file (channels averaged)."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate, n = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except FileNotFoundError:
        raise SampleError("missing", f"{where}: file {path} not found") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise SampleError("corrupt", f"{where}: {path} is not a readable PCM WAV ({exc})") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:  # pragma: no cover - wave itself rejects other widths
        raise SampleError("corrupt", f"{where}: {path} has unsupported sample width {width}")
    if len(x) < channels or len(x) % channels:
        raise SampleError("corrupt", f"{where}: {path} holds no complete audio frame")
    return x.reshape(-1, channels).mean(1), rate


@functools.lru_cache(maxsize=8)
def _resampler(rate: int, target: int) -> torch.nn.Module:
    import torchaudio.transforms as AT  # imported lazily: only needed off the native rate

    return AT.Resample(rate, target)  # builds the sinc kernel once (3-5x faster than functional.resample per clip)


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Windowed-sinc resampling (torchaudio's default Hann-windowed kernel, 6 zero crossings)."""
    if rate == target:
        return x
    with torch.no_grad():
        return _resampler(rate, target)(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def tile_clip(y: np.ndarray, n: int) -> np.ndarray:
    """Repeat ``y`` to at least ``n`` samples, keep the first ``n``, clip to [-1, 1].

    The official loader tiles exactly three times (``np.tile(x, 3)[:3 s]``), which leaves clips under
    1 s short; we tile as often as needed so that every clip yields the same number of frames.
    """
    reps = max(3, -(-n // max(len(y), 1)))
    return np.clip(np.tile(y, reps)[:n], -1.0, 1.0)


def ogm_spectrogram(
    x: np.ndarray,
    rate: int,
    target_rate: int = 22050,
    seconds: float = 3.0,
    n_fft: int = 512,
    hop: int = 353,
    pad_mode: str = "constant",
) -> torch.Tensor:
    """OGM-GE's CREMA-D audio feature: ``log(|STFT| + 1e-7)`` of the clip tiled to ``seconds``.

    Steps (as the official loader): resample to ``target_rate``; tile the clip three times and
    keep the first ``seconds`` (shorter clips repeat, longer ones are cut); clip to [-1, 1]; centred
    STFT with a periodic Hann window of ``n_fft`` and hop ``hop``; magnitude; natural log after
    adding 1e-7. Defaults give ``[257, 188]``. ``pad_mode`` is how the centred STFT pads the ends:
    ``constant`` (zeros, librosa >= 0.10) or ``reflect`` (librosa < 0.10, the OGM-GE era); only the
    first and last frames differ.
    """
    y = tile_clip(resample(np.asarray(x, np.float32), rate, target_rate), int(round(target_rate * seconds)))
    spec = torch.stft(
        torch.from_numpy(y),
        n_fft=n_fft,
        hop_length=hop,
        window=torch.hann_window(n_fft),
        center=True,
        pad_mode=pad_mode,
        return_complex=True,
    )
    return torch.log(spec.abs() + 1e-7).float()


def kaldi_fbank(
    x: np.ndarray,
    rate: int,
    mel_bins: int = 128,
    target_length: int = 1024,
    mean: float = -4.2677393,
    std: float = 4.5689974,
) -> torch.Tensor:
    """AST-style Kaldi fbank (25 ms window, 10 ms shift, Hanning), padded/cut to ``target_length`` frames
    and normalised with the AudioSet statistics (the MLA / Kinetics-Sounds ``.npy`` features)."""
    import torchaudio.compliance.kaldi as kaldi

    w = torch.from_numpy(np.asarray(x, np.float32))[None]
    w = w - w.mean()
    fb = kaldi.fbank(
        w,
        htk_compat=True,
        sample_frequency=rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=mel_bins,
        dither=0.0,
        frame_shift=10,
    )
    return (fix_time(fb, target_length, axis=0) - mean) / (std * 2)


def fix_time(x: torch.Tensor, length: int, axis: int) -> torch.Tensor:
    """Zero-pad or cut ``x`` along ``axis`` to ``length`` (the references pad at the end)."""
    n = x.shape[axis]
    if n >= length:
        return x.narrow(axis, 0, length)
    pad = [0, 0] * (x.dim() - 1 - axis) + [0, length - n]
    return torch.nn.functional.pad(x, pad)


class _ArrayOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: a pickle from a data folder must not run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "bytearray"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def load_feature(path: Path, where: str) -> np.ndarray:
    """A 2-D float feature from ``.npy`` (no pickles) or ``.pkl`` (numpy arrays only)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SampleError("missing", f"{where}: file {path} not found") from None
    try:
        if path.suffix == ".npy":
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            arr = _ArrayOnly(io.BytesIO(data)).load()
        arr = np.asarray(arr, dtype=np.float32)
    except Exception as exc:  # any decoding failure means a corrupt file
        raise SampleError(
            "corrupt", f"{where}: cannot read feature file {path} ({type(exc).__name__}: {exc})"
        ) from None
    if arr.ndim != 2 or not np.isfinite(arr).all():
        raise SampleError(
            "corrupt",
            f"{where}: {path} holds shape {arr.shape} (finite: {bool(np.isfinite(arr).all())}); "
            "expected a finite 2-D array",
        )
    return arr


class FeatureLoader:
    """A loader whose output does not depend on ``train`` (no random crop or pick): ``mmbal prepare``
    stores that output itself, as float16 (:mod:`trainables.data.io.prepared`)."""

    def shape(self) -> tuple[int, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare_spec(self) -> dict[str, Any]:
        return {"kind": "feature", "shape": list(self.shape())}

    def store(self, sample: Sample, size: int, max_frames: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The loader's own output for ``sample`` as float16 (frame knobs do not apply)."""
        return self(sample, False).numpy().astype(np.float16), {}


class WavSpectrogram(FeatureLoader):
    """Loader: ``sample.files["audio"]`` (a WAV) -> OGM-GE log-STFT ``[1, n_fft // 2 + 1, frames]``."""

    def __init__(
        self, rate: int = 22050, seconds: float = 3.0, n_fft: int = 512, hop: int = 353, pad_mode: str = "constant"
    ) -> None:
        self.rate, self.seconds, self.n_fft, self.hop, self.pad_mode = rate, seconds, n_fft, hop, pad_mode

    def shape(self) -> tuple[int, int, int]:
        return (1, self.n_fft // 2 + 1, int(round(self.rate * self.seconds)) // self.hop + 1)

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        x, rate = read_wav(sample.files["audio"], sample.where)
        if len(x) == 0:
            raise SampleError("corrupt", f"{sample.where}: {sample.files['audio']} holds no samples")
        return ogm_spectrogram(x, rate, self.rate, self.seconds, self.n_fft, self.hop, self.pad_mode)[None]


class FeatureFile(FeatureLoader):
    """Loader: a stored 2-D feature (``.npy`` / ``.pkl``) -> ``[1, F, T]`` with ``T`` padded/cut to ``frames``.

    Args:
        bins: expected feature size F (checked: a wrong file is ``corrupt``, not silently reshaped).
        frames: time length T after padding/cutting.
        time_first: the file stores ``[T, F]`` (Kaldi fbank .npy) rather than ``[F, T]`` (spectrograms).
    """

    def __init__(self, bins: int, frames: int, time_first: bool) -> None:
        self.bins, self.frames, self.time_first = bins, frames, time_first

    def shape(self) -> tuple[int, int, int]:
        return (1, self.bins, self.frames)

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        arr = load_feature(sample.files["audio"], sample.where)
        if self.time_first:
            arr = arr.T
        if arr.shape[0] != self.bins:
            raise SampleError(
                "corrupt",
                f"{sample.where}: {sample.files['audio']} has {arr.shape[0]} feature bins, expected {self.bins}",
            )
        return fix_time(torch.from_numpy(np.ascontiguousarray(arr)), self.frames, axis=1)[None]
