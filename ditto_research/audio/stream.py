"""A file's audio read once, front to back, at 16 kHz mono float32: memory does not grow with its length.

The same two steps as :func:`~ditto_research.audio.io.load_audio` (decode at the file's rate with the plain
channel mean, then soxr to the target rate), run as a pipeline instead of one buffer each: the decoder's
float32 stream is pumped into the resampler by a thread, and :meth:`AudioStream.read` takes samples from the
resampler as they come. The samples are those of ``load_audio`` on the same range, up to its final length fix
(``librosa_length``: at most one sample at the very end).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path
from typing import IO

import numpy as np

from ditto_research.audio.io import _AU_FLOAT32, _AU_HEADER, _failure_reason
from ditto_research.constants import SAMPLE_RATE
from ditto_research.errors import ConfigError, InputError
from ditto_research.media.ffmpeg import audio_decode_args, audio_resample_args, find_ffmpeg

__all__ = ["AudioStream"]

_PUMP_BYTES = 1 << 16


def _stop(processes: list[subprocess.Popen[bytes]], log: IO[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
    log.close()


def _read_exactly(pipe: IO[bytes], size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = pipe.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class AudioStream:
    """The first audio stream of ``path`` (optionally the range ``start_s`` .. ``start_s + duration_s``) as
    mono float32 at ``sample_rate``, read in order with :meth:`read`; ``close()`` (or ``with``) stops the
    decoders early.

    Raises:
        InputError: the file has no audio stream or it cannot be decoded (one line naming the file); a sample
            that is NaN or infinite (when it is read).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int = SAMPLE_RATE,
        start_s: float | None = None,
        duration_s: float | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.sample_rate = int(sample_rate)
        self.samples_read = 0
        ffmpeg = find_ffmpeg()
        self._log = tempfile.TemporaryFile()
        self._processes: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _stop, self._processes, self._log)
        decoder = self._start(audio_decode_args(ffmpeg, self.path.resolve(), start_s, duration_s), stdin=None)
        assert decoder.stdout is not None
        header = _read_exactly(decoder.stdout, _AU_HEADER.size)
        if len(header) < _AU_HEADER.size:
            decoder.wait()
            self._log.seek(0)
            reason = _failure_reason(self._log.read())
            self.close()
            raise InputError(f"cannot decode the audio of {self.path}: {reason}")
        magic, offset, _, encoding, rate, channels = _AU_HEADER.unpack(header)
        if magic != b".snd" or encoding != _AU_FLOAT32 or channels != 1 or rate <= 0:
            self.close()
            raise InputError(f"cannot decode the audio of {self.path}: unexpected ffmpeg output")
        _read_exactly(decoder.stdout, offset - _AU_HEADER.size)  # the header's annotation
        self.native_rate = int(rate)
        if self.native_rate == self.sample_rate:
            self._source: IO[bytes] = decoder.stdout
            self._dtype = np.dtype(">f4")
            return
        resampler = self._start(
            audio_resample_args(ffmpeg, self.native_rate, self.sample_rate), stdin=subprocess.PIPE
        )
        assert resampler.stdout is not None and resampler.stdin is not None
        self._source, self._dtype = resampler.stdout, np.dtype("<f4")
        self._pump = threading.Thread(
            target=self._convert, args=(decoder.stdout, resampler.stdin), name="audio-pump", daemon=True
        )
        self._pump.start()

    def _start(self, command: list[str], stdin: int | None) -> subprocess.Popen[bytes]:
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=subprocess.PIPE,
                stderr=self._log,
            )
        except OSError as e:
            raise ConfigError(f"could not run ffmpeg ({command[0]}): {e}") from e
        self._processes.append(process)
        return process

    @staticmethod
    def _convert(source: IO[bytes], sink: IO[bytes]) -> None:
        """Big-endian float32 from the decoder -> little-endian float32 into the resampler."""
        rest = b""
        try:
            while chunk := source.read(_PUMP_BYTES):
                data = rest + chunk
                usable = len(data) - len(data) % 4
                rest = data[usable:]
                sink.write(np.frombuffer(data[:usable], dtype=">f4").astype("<f4").tobytes())
        except (OSError, ValueError):  # closed early (stream stopped): nothing more to pump
            pass
        finally:
            try:
                sink.close()
            except OSError:
                pass

    def read(self, count: int) -> np.ndarray:
        """The next ``count`` samples (fewer at the end of the stream; an empty array after it)."""
        raw = _read_exactly(self._source, count * 4) if count > 0 else b""
        samples = np.frombuffer(raw[: len(raw) - len(raw) % 4], dtype=self._dtype).astype(np.float32)
        if not np.isfinite(samples).all():
            raise InputError(
                f"the audio of {self.path} has NaN or infinite samples near {self.seconds:.2f} s; "
                "re-encode it"
            )
        self.samples_read += samples.shape[0]
        return samples

    @property
    def seconds(self) -> float:
        """Seconds of audio read so far."""
        return self.samples_read / self.sample_rate

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
