"""Every hostile input kind the runtime must survive, written to disk on demand (tests and docs/reliability.md).

Audio kinds are files (or a directory) meant to sit at `audio/<id>.wav` of an evaluation package; each has the
outcome the runtime documents for it: `decoded` (a normal prediction from the audio) or `fallback` with the start of
the reason `Prediction.fallback` carries (the text-only family decides). Metadata kinds are whole metadata CSVs as
bytes, with the outcome `read` (the package reads, ids as listed) or `refused` (a DataError naming the file, the
row and the reason).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

REAL_AUDIO_DIR = Path("/work/shared/audio/librosa-data")
EVAL_HEADER = "anonymous_id,title,tags,description"


@dataclass(frozen=True)
class AudioKind:
    name: str
    write: Callable[[Path], None]
    outcome: str  # "decoded" | "fallback"
    reason: str = ""  # start of Prediction.fallback for a fallback


def _tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * rate)))
    t = np.arange(n) / rate
    wave = 0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.standard_normal(n)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def _wav_bytes(seconds: float = 1.0, rate: int = 16000) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, _tone(seconds, rate), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_zero_byte(path: Path) -> None:
    path.write_bytes(b"")


def write_truncated_header(path: Path) -> None:
    path.write_bytes(_wav_bytes()[:30])  # RIFF/WAVE and half of the fmt chunk


def write_random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(7).bytes(64_000))


def write_directory(path: Path) -> None:
    path.mkdir()
    (path / "inside.wav").write_bytes(_wav_bytes())


def write_link_to_proc_mem(path: Path) -> None:
    """A symlink to a 'regular' file whose reads fail with EIO (size 0): hashing it for the run record raised."""
    os.symlink("/proc/self/mem", path)


def write_link_to_device(path: Path) -> None:
    """A symlink to an endless character device: not a regular file, so never opened."""
    os.symlink("/dev/zero", path)


def write_8ch_96k_24bit(path: Path) -> None:
    sf.write(path, _tone(2.0, 96000, channels=8) * np.linspace(0.2, 1.0, 8, dtype=np.float32), 96000,
             subtype="PCM_24")


def write_1024_channels(path: Path) -> None:
    """libsndfile's channel maximum: reads are bounded in samples, not frames (a 1 M-frame read would be 4 GB)."""
    sf.write(path, _tone(0.25, 16000, channels=1024), 16000, subtype="PCM_16")


def write_8k_mono(path: Path) -> None:
    sf.write(path, _tone(3.0, 8000), 8000, subtype="PCM_16")


def write_float_nan_inf(path: Path) -> None:
    wave = _tone(2.0, 22050)[:, 0]
    wave[::997] = np.nan
    wave[5::1499] = np.inf
    wave[9::1733] = -np.inf
    sf.write(path, wave, 22050, subtype="FLOAT")


def write_all_nan(path: Path) -> None:
    sf.write(path, np.full(48000, np.nan, dtype=np.float32), 48000, subtype="FLOAT")


def write_silence(path: Path) -> None:
    sf.write(path, np.zeros(48000 * 2, dtype=np.float32), 48000, subtype="PCM_16")


def write_dc(path: Path) -> None:
    sf.write(path, np.full(44100 * 2, 0.5, dtype=np.float32), 44100, subtype="PCM_16")


def write_short(path: Path) -> None:
    sf.write(path, _tone(0.01, 44100), 44100, subtype="PCM_16")


def write_block_edge(path: Path) -> None:
    """40.96 s at 48 kHz: the log-mel's last STFT block is one frame (it once crashed the reflect padding)."""
    sf.write(path, _tone(4096 * 480 / 48000, 48000), 48000, subtype="PCM_16")


def write_one_sample(path: Path) -> None:
    sf.write(path, np.array([0.25], dtype=np.float32), 16000, subtype="PCM_16")


def write_no_frames(path: Path) -> None:
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 16000, subtype="PCM_16")


def write_absurd_rate(path: Path) -> None:
    """A valid WAV whose header claims 1 Hz: resampling it to 48 kHz would multiply its size by 48000."""
    sf.write(path, _tone(1.0, 16000), 1, subtype="PCM_16")


def _encoded(fmt: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:  # content in another container, under the package's .wav name
        sf.write(path, np.clip(_tone(2.0, 44100), -1, 1), 44100, format=fmt)

    write.__name__ = f"write_{fmt.lower()}"
    return write


def write_real_ogg(path: Path) -> None:
    """A real recording (the shared librosa clips), Ogg Vorbis content under a .wav name."""
    shutil.copyfile(sorted(REAL_AUDIO_DIR.glob("*.ogg"))[0], path)


def mp3_supported() -> bool:
    return "MP3" in sf.available_formats()


AUDIO_KINDS: dict[str, AudioKind] = {k.name: k for k in [
    AudioKind("zero-byte", write_zero_byte, "fallback", "zero-byte audio"),
    AudioKind("truncated-header", write_truncated_header, "fallback", "undecodable audio"),
    AudioKind("random-bytes", write_random_bytes, "fallback", "undecodable audio"),
    AudioKind("directory", write_directory, "fallback", "missing audio"),
    AudioKind("link-to-device", write_link_to_device, "fallback", "missing audio"),
    AudioKind("link-to-proc-mem", write_link_to_proc_mem, "fallback", "zero-byte audio"),
    AudioKind("no-frames", write_no_frames, "fallback", "undecodable audio"),
    AudioKind("absurd-rate", write_absurd_rate, "fallback", "undecodable audio"),
    AudioKind("all-nan", write_all_nan, "decoded"),
    AudioKind("8ch-96k-24bit", write_8ch_96k_24bit, "decoded"),
    AudioKind("1024-channels", write_1024_channels, "decoded"),
    AudioKind("8k-mono", write_8k_mono, "decoded"),
    AudioKind("float-nan-inf", write_float_nan_inf, "decoded"),
    AudioKind("silence", write_silence, "decoded"),
    AudioKind("dc", write_dc, "decoded"),
    AudioKind("0.01s", write_short, "decoded"),
    AudioKind("one-sample", write_one_sample, "decoded"),
    AudioKind("block-edge-40.96s", write_block_edge, "decoded"),
    AudioKind("flac", _encoded("FLAC"), "decoded"),
    AudioKind("ogg", _encoded("OGG"), "decoded"),
    AudioKind("real-ogg", write_real_ogg, "decoded"),
] + ([AudioKind("mp3", _encoded("MP3"), "decoded")] if mp3_supported() else [])}


def write_audio(kind: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    AUDIO_KINDS[kind].write(path)
    return path


# ---------------------------------------------------------------------------------------------- metadata CSVs
@dataclass(frozen=True)
class CsvKind:
    name: str
    content: bytes
    outcome: str  # "read" | "refused"
    ids: tuple[str, ...] = ()  # for "read": the ids, in order
    message: str = ""  # for "refused": a fragment the error must contain (besides the file name)


def _rows(*rows: str) -> bytes:
    return ("\n".join([EVAL_HEADER, *rows]) + "\n").encode("utf-8")


BIG_DESCRIPTION = ("a long <b>description</b> &amp; more, " * 30_000)[:1_000_000]

CSV_KINDS: dict[str, CsvKind] = {k.name: k for k in [
    CsvKind("bom", b"\xef\xbb\xbf" + _rows("a1,Bird,bird song,chirps"), "read", ("a1",)),
    CsvKind("extra-columns", b"anonymous_id,title,tags,description,uploader,license\n"
            b"a1,Bird,bird,chirps,me,cc0\na2,Car,car,engine,you,cc-by\n", "read", ("a1", "a2")),
    CsvKind("quoted-newlines", _rows('a1,"Two\nline title","t1,t2","desc ""quoted""\n\nmore"', "a2,x,y,z"),
            "read", ("a1", "a2")),
    CsvKind("crlf", _rows("a1,x,y,z", "a2,x,y,z").replace(b"\n", b"\r\n"), "read", ("a1", "a2")),
    CsvKind("1mb-description", _rows(f'a1,Big,tags,"{BIG_DESCRIPTION}"', "a2,x,y,z"), "read", ("a1", "a2")),
    CsvKind("empty-fields", _rows("a1,,,", "a2,,,"), "read", ("a1", "a2")),
    CsvKind("missing-column", b"anonymous_id,title,description\na1,x,z\n", "refused", message="tags"),
    CsvKind("short-row", _rows("a1,x,y,z", "a2,x"), "refused", message="row 2"),
    # latin-1 bytes in one row (old Freesound exports): read with U+FFFD and counted; --strict-metadata refuses it
    CsvKind("non-utf8-row", _rows("a1,x,y,z") + b"a2,caf\xe9,y,z\n", "read", ("a1", "a2")),
    CsvKind("non-utf8-header", b"anonymous_id,title,tags,descripci\xf3n\na1,x,y,z\n", "refused", message="row 0"),
    CsvKind("duplicate-ids", _rows("a1,x,y,z", "a2,x,y,z", "a1,again,y,z"), "refused", message="duplicate id"),
    CsvKind("id-slash", _rows("a1,x,y,z", "sub/a2,x,y,z"), "refused", message="row 2"),
    CsvKind("id-dotdot", _rows("..,x,y,z"), "refused", message="row 1"),
    CsvKind("id-parent", _rows("../../etc/passwd,x,y,z"), "refused", message="row 1"),
    CsvKind("id-absolute", _rows("/etc/passwd,x,y,z"), "refused", message="row 1"),
    CsvKind("id-backslash", _rows("..\\..\\x,x,y,z"), "refused", message="row 1"),
    CsvKind("id-carriage-return", _rows('"a\rb",x,y,z'), "refused", message="row 1"),
    CsvKind("id-nul", _rows("a\x001,x,y,z"), "refused", message="row 1"),
    CsvKind("empty-id", _rows(",x,y,z"), "refused", message="row 1"),
    CsvKind("empty-file", b"", "refused", message="empty"),
    CsvKind("header-only", _rows(), "read", ()),
]}


def make_package(root: Path, rows: list[tuple[str, str, str, str]], audio: dict[str, str | Path | None],
                 *, unlisted_audio: tuple[str, ...] = ()) -> Path:
    """An evaluation package: metadata.csv from `rows`; `audio[id]` is a hostile kind name, a source file to link,
    or None (no audio for that row); `unlisted_audio` are clips in audio/ without a metadata row."""
    import csv

    (root / "audio").mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(EVAL_HEADER.split(","))
        writer.writerows(rows)
    for clip_id, source in audio.items():
        target = root / "audio" / f"{clip_id}.wav"
        if source is None:
            continue
        if isinstance(source, Path):
            os.symlink(source.resolve(), target)
        else:
            write_audio(source, target)
    for clip_id in unlisted_audio:
        target = root / "audio" / f"{clip_id}.wav"
        target.write_bytes(_wav_bytes())
    return root


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`bst-rt ARGS` in a subprocess (the installed entry point of this venv)."""
    import sys

    exe = Path(sys.executable).with_name("bst-rt")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def first_clips(eval_dir: Path, root: Path, n: int) -> Path:
    """A package of the first `n` clips of `eval_dir` under `root` (audio linked, metadata rewritten)."""
    import csv

    meta = next(Path(eval_dir).glob("*.csv"))
    (root / "audio").mkdir(parents=True)
    with open(meta, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    with open(root / meta.name, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows[: n + 1])
    for row in rows[1 : n + 1]:
        audio = Path(eval_dir) / "audio" / f"{row[0]}.wav"
        if audio.exists():
            os.symlink(audio, root / "audio" / audio.name)
    return root


def copy_bundle(bundle: Path, dst: Path, real: tuple[str, ...] = ("manifest.json",)) -> Path:
    """A bundle we may damage: the files named in `real` copied, every other one a symlink to the original's."""
    import shutil

    dst.mkdir()
    for p in Path(bundle).iterdir():
        if p.name in real:
            shutil.copyfile(p, dst / p.name)
        else:
            os.symlink(p.resolve(), dst / p.name)
    return dst
