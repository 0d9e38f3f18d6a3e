"""Video decoding with PyAV (FFmpeg bundled in the wheel): frames at fixed times, and the audio track.

Used by ``mmbal prepare``; training never decodes video. PyAV was chosen over torchcodec because
its wheels bring their own FFmpeg (torchcodec needs a system FFmpeg and a wheel matching the exact
torch version) and it reads every container the raw datasets use (FLV for CREMA-D, MP4 for
Kinetics-Sounds).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from trainables.data.io.lists import SampleError
from trainables.errors import ConfigError


def _av() -> ModuleType:
    """PyAV, imported on first use (only ``mmbal prepare`` needs it)."""
    try:
        import av
    except ImportError:
        raise ConfigError("prepare", "decoding video needs PyAV: pip install 'mmbal[video]' (or av)") from None
    return av


def decode_frames(path: Path, count: int, fps: float, size: int, where: str) -> np.ndarray:
    """Up to ``count`` frames at times ``(i + 0.5) / fps`` as uint8 ``[n, size, size, 3]`` (PyAV)."""
    av = _av()

    targets = [(i + 0.5) / fps for i in range(count)]
    out: list[np.ndarray] = []
    last = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else 0.0
                last = frame
                while targets and t >= targets[0] - 1e-6:
                    out.append(frame.to_ndarray(format="rgb24", width=size, height=size))
                    targets.pop(0)
                if not targets:
                    break
    except FileNotFoundError:
        raise SampleError("missing", f"{where}: video {path} not found") from None
    except (av.FFmpegError, IndexError, ValueError, OSError) as exc:
        raise SampleError("corrupt", f"{where}: cannot decode video {path} ({type(exc).__name__}: {exc})") from None
    if not out and last is not None:  # a clip shorter than half a second: keep its last frame
        out.append(last.to_ndarray(format="rgb24", width=size, height=size))
    if not out:
        raise SampleError("corrupt", f"{where}: video {path} holds no decodable frame")
    return np.stack(out)


def decode_audio(path: Path, rate: int, where: str) -> np.ndarray:
    """The first audio track as mono float32 at ``rate`` Hz (FFmpeg's resampler does the conversion)."""
    av = _av()

    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise SampleError("corrupt", f"{where}: video {path} has no audio track")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except FileNotFoundError:
        raise SampleError("missing", f"{where}: video {path} not found") from None
    except (av.FFmpegError, IndexError, ValueError, OSError) as exc:
        raise SampleError(
            "corrupt", f"{where}: cannot decode the audio of {path} ({type(exc).__name__}: {exc})"
        ) from None
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise SampleError("corrupt", f"{where}: video {path} holds no audio samples")
    return np.concatenate(chunks).astype(np.float32)
