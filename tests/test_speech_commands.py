"""Speech Commands' digit clips as extra training voices for the FSDD recipes (issue 18): the
registry's two public file lists, and the conversion prepare runs on clips downloaded from a
server on the loopback address (clips made here from FSDD recordings, laid out as Speech
Commands': 16 kHz, padded to a second, a word per folder or per name)."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seqpipe.core.pipeline import Pipeline
from seqpipe.core.recipe import load_recipe
from seqpipe.data import registry
from seqpipe.data.asr_datasets import DIGIT_WORDS, DatasetError, build_connected_digits
from seqpipe.data.audio import read_audio, resample
from seqpipe.data.speech_commands import Convert, clip_digit, write_digit_recordings

from .conftest import MIRROR, REPO
from .test_asr_pipeline import TINY_FSDD
from .test_downloads import Server, server  # noqa: F401  (the fixture)

SMALL = REPO / "recipes" / "asr_small.yaml"


def test_the_registry_names_340_digit_clips_at_fixed_commits():
    """Two public copies of Speech Commands subsets, each at a commit: every listed file is a
    digit word (100 + 240 clips, every digit at least 18 times)."""
    entry = registry.extra_speaker_entry("fsdd", "speechcommands")
    sources = registry.extra_speaker_sources(entry)
    assert [len(registry.read_file_list(s["list"])) for s in sources] == [100, 240]
    for s in sources:
        assert re.fullmatch(
            r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/", s["url"]
        )
    digits = [clip_digit(rel) for s in sources for _, rel in registry.read_file_list(s["list"])]
    assert min(digits.count(d) for d in range(10)) >= 18
    assert entry["layout"] == "speech_commands" and Convert(**entry["convert"]) == Convert()


def _clip(recording: Path, lead_s: float, rng: np.random.Generator) -> bytes:
    """An FSDD recording as a Speech Commands clip: 16 kHz, placed ``lead_s`` into one second
    of faint noise."""
    wave = resample(read_audio(recording)[0], 8000, 16000)
    out = rng.standard_normal(16000).astype(np.float32) * 1e-4
    start = int(lead_s * 16000)
    out[start : start + len(wave)] += wave[: 16000 - start]
    buf = io.BytesIO()
    sf.write(buf, out, 16000, subtype="PCM_16", format="WAV")
    return buf.getvalue()


@pytest.fixture
def clips(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    """A served extra speaker ``clips`` (layout speech_commands, two sources): george's takes
    0-1 of every digit in one (word folders), theo's take 0 in the other (word-named files),
    and a silent clip; the registry's fsdd entry otherwise as it is."""
    root = registry.safe_extract_tar(
        MIRROR / "fsdd" / "fsdd_recordings_train_5spk.tar.gz", tmp_path
    )
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    files = {"a.sha256": {}, "b.sha256": {}}
    for digit, word in enumerate(DIGIT_WORDS):
        for take in range(2):
            rec = root / "recordings" / f"{digit}_george_{take}.wav"
            files["a.sha256"][f"sc_v1/{word}/g{take}_nohash_0.wav"] = _clip(rec, 0.3, rng)
        rec = root / "recordings" / f"{digit}_theo_0.wav"
        files["b.sha256"][f"set/_unknown_/{word}_t_nohash_0.wav.wav"] = _clip(rec, 0.1, rng)
    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000, np.float32), 16000, subtype="PCM_16", format="WAV")
    files["b.sha256"]["set/_unknown_/nine_silent_nohash_0.wav.wav"] = buf.getvalue()
    sources = []
    for name, listed in files.items():
        base = f"owner/{name[0]}/0123/"
        lines = []
        for rel, body in listed.items():
            server.files[base + rel] = body
            lines.append(f"{hashlib.sha256(body).hexdigest()}  {rel}\n")
        (data / name).write_text("".join(sorted(lines)))
        sources.append({"url": server.url + base, "list": name})
    extra = {"clips": {"layout": "speech_commands", "convert": {}, "sources": sources}}
    real = registry.dataset_entry
    monkeypatch.setattr(
        registry,
        "dataset_entry",
        lambda name: {**real(name), "extra_speakers": extra} if name == "fsdd" else real(name),
    )
    monkeypatch.setattr(registry, "REGISTRY_FILE", data / "registry.yaml")
    monkeypatch.setenv("SEQPIPE_DOWNLOADS", str(tmp_path / "downloads"))
    return root, files


def test_clips_are_trimmed_resampled_and_named_as_fsdd_recordings(clips, tmp_path: Path):
    """Each clip: its digit from its folder or its name, its padding trimmed to 50 ms either
    side of the word, 8 kHz, peak 0.5; the silent clip left out; the same files twice."""
    root, files = clips
    upstream = registry.fetch_extra_speaker("fsdd", "clips")
    rels = [rel for listed in files.values() for rel in listed]
    assert write_digit_recordings(upstream, rels, tmp_path / "one", "clips") == 30
    made = sorted((tmp_path / "one" / "recordings").glob("*.wav"))
    assert len(made) == 30
    write_digit_recordings(upstream, rels, tmp_path / "two", "clips")
    again = sorted((tmp_path / "two" / "recordings").glob("*.wav"))
    assert [p.read_bytes() for p in made] == [p.read_bytes() for p in again]
    # k counts sorted(rels): george's clips (sc_v1/<word>/...) first, then theo's (set/...)
    words = sorted(DIGIT_WORDS)
    order = [("george", t, w) for w in words for t in (0, 1)] + [("theo", 0, w) for w in words]
    for k, (speaker, take, word) in enumerate(order):
        digit = DIGIT_WORDS.index(word)
        wave, sr = read_audio(tmp_path / "one" / "recordings" / f"{digit}_clips_{k}.wav")
        source, _ = read_audio(root / "recordings" / f"{digit}_{speaker}_{take}.wav")
        assert sr == 8000 and abs(float(np.abs(wave).max()) - 0.5) < 1e-3
        assert len(source) <= len(wave) <= len(source) + 0.11 * 8000  # the word, 2 x 50 ms
    with pytest.raises(DatasetError, match="not a digit word"):
        clip_digit("speech_commands_v0.01/marvin/abc_nohash_0.wav")


def test_prepare_adds_the_clips_as_one_training_voice(clips, tmp_path: Path):
    """``data.extra_speakers=[clips]``: prepare converts the clips into its own output, they
    train as one more speaker, the valid and test utterances are unchanged, and the key holds
    the clips' lists and conversion."""
    plain = [*TINY_FSDD[:2], "data.test_speakers=[theo]"]
    ws = tmp_path / "ws"
    ws.mkdir()
    with_clips = Pipeline(load_recipe(SMALL, [*plain, "data.extra_speakers=[clips]"]), ws)
    without = Pipeline(load_recipe(SMALL, plain), ws)
    assert with_clips.keys()["prepare"] != without.keys()["prepare"]
    a = with_clips.run(stop="prepare")["prepare"]
    b = without.run(stop="prepare")["prepare"]
    assert len(list((a.path / "extra_speakers" / "clips" / "recordings").glob("*.wav"))) == 30
    stats = json.loads((a.path / "stats.json").read_text())["splits"]
    assert stats["train"]["speakers"] == 4  # george, nicolas, yweweler and the clips
    for split in ("valid", "test"):
        rows = (a.path / f"{split}.tsv").read_text()
        assert rows == (b.path / f"{split}.tsv").read_text()
        for line in rows.splitlines()[1:]:
            rel = line.split("\t")[1]
            assert (a.path / rel).read_bytes() == (b.path / rel).read_bytes()
    assert "\tclips\n" in (a.path / "train.tsv").read_text()


def test_the_connected_corpus_mixes_the_clips_voices_in_one_speaker(clips, tmp_path: Path):
    """The clips train as one speaker: its utterances draw from all of its voices."""
    root, files = clips
    upstream = registry.fetch_extra_speaker("fsdd", "clips")
    rels = [rel for listed in files.values() for rel in listed]
    write_digit_recordings(upstream, rels, tmp_path / "x", "clips")
    kwargs = dict(num_utts={"train": 40, "valid": 2, "test": 2}, seed=1)
    built = build_connected_digits(
        [root, tmp_path / "x"], tmp_path / "out", test_speakers=["theo"], **kwargs
    )
    assert "clips" in {u.speaker for u in built["train"]}
