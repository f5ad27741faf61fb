"""Audio reading, ASR corpora, archive safety, features, SpecAugment and front-ends, on real
audio from the shared data mirror (archives extracted once per module into a temp dir)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from seqpipe.asr.features import (
    FeatureStore,
    SpecAugment,
    add_noise,
    compute_features_parallel,
    fbank,
    load_wave,
    noise_snr_db,
    num_fbank_frames,
    speed_perturb,
)
from seqpipe.data import synth
from seqpipe.data.asr_datasets import (
    DIGIT_WORDS,
    DatasetError,
    Utterance,
    build_connected_digits,
    extract_once,
    load_an4,
    load_fsdd,
    load_kaldi_dir,
    load_librispeech,
    load_tsv,
    load_yesno,
)
from seqpipe.data.audio import AudioError, read_audio
from seqpipe.data.registry import UnsafeArchiveError, safe_extract_tar
from seqpipe.errors import InputError
from seqpipe.models.frontends import Conv2dSubsampling, PyramidalBiLSTMEncoder, PyramidalReduce

torch.set_num_threads(1)

MIRROR = Path(
    os.environ.get("SEQPIPE_MIRROR")
    or Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
)
YESNO_FILE = "0_0_1_0_1_0_0_1"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """yesno, FSDD, AN4 subset and the LibriSpeech sample, extracted once."""
    root = tmp_path_factory.mktemp("asr_data")
    for archive in (
        "yesno/waves_yesno.tar.gz",
        "fsdd/fsdd_recordings_train_5spk.tar.gz",
        "an4_subset/an4_subset.tar.gz",
        "librispeech_sample/librispeech_test-clean_1089_sample.tar.gz",
    ):
        safe_extract_tar(MIRROR / archive, root)
    return root


# ------------------------------------------------------------------------------- audio


def test_read_audio_and_resample(data: Path) -> None:
    wave, sr = read_audio(data / "waves_yesno" / f"{YESNO_FILE}.wav")
    assert sr == 8000 and wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == 54080
    assert 0 < np.abs(wave).max() <= 1.0
    up, sr16 = read_audio(data / "waves_yesno" / f"{YESNO_FILE}.wav", 16000)
    assert sr16 == 16000 and len(up) == 2 * len(wave)
    flac, sr = read_audio(next((data / "LibriSpeech").rglob("1089-134691-0000.flac")))
    assert sr == 16000 and abs(len(flac) / sr - 2.1) < 0.1


def test_corrupt_audio_raises_audio_error_naming_the_file(data: Path, tmp_path: Path) -> None:
    good = (data / "waves_yesno" / f"{YESNO_FILE}.wav").read_bytes()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good[:20])  # cut inside the RIFF header
    noise = tmp_path / "noise.wav"
    noise.write_bytes(np.random.default_rng(0).bytes(4000))
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 8000, subtype="PCM_16")
    for path in (truncated, noise, empty, tmp_path / "missing.wav"):
        with pytest.raises(AudioError) as err:
            read_audio(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        assert isinstance(err.value, ValueError)


# ------------------------------------------------------------------------------- features


def test_fbank_golden(data: Path) -> None:
    """Kaldi fbank (80 bins, 25/10 ms, no dither) of one yesno file, values computed once."""
    wave, sr = read_audio(data / "waves_yesno" / f"{YESNO_FILE}.wav")
    feats = fbank(wave, sr, num_mel_bins=80)
    assert feats.shape == (674, 80) == (num_fbank_frames(len(wave), sr), 80)
    expected = torch.tensor([9.726144, 9.551929, 9.456530, 9.434072, 8.683737])
    torch.testing.assert_close(feats[0, :5], expected, atol=1e-4, rtol=0)
    assert abs(feats.mean().item() - 12.474114) < 1e-4
    assert abs(feats[100, 40].item() - 19.254370) < 1e-4
    assert fbank(wave[:150], sr).shape == (0, 80)  # shorter than one window


def test_speed_perturbation_lengths(data: Path) -> None:
    path = data / "waves_yesno" / f"{YESNO_FILE}.wav"
    wave, sr = read_audio(path)
    for factor in (0.9, 1.1):
        out = speed_perturb(wave, sr, factor)
        assert abs(len(out) - len(wave) / factor) <= 1
        # one-step load (file rate taken as sr * factor, resampled to the target rate)
        assert abs(len(load_wave(path, 16000, factor)) - 2 * len(wave) / factor) <= 1
    assert speed_perturb(wave, sr, 1.0) is wave


def test_feature_store_parallel_equals_serial(data: Path, tmp_path: Path) -> None:
    utts = load_yesno(data, "test")[:3] + load_an4(data, "test")[:2]  # 8 kHz and 16 kHz
    serial = compute_features_parallel(
        utts,
        tmp_path / "serial",
        num_workers=0,
        sample_rate=16000,
        speeds=(0.9, 1.0, 1.1),
        progress=False,
    )
    par = compute_features_parallel(
        utts,
        tmp_path / "par",
        num_workers=2,
        sample_rate=16000,
        speeds=(0.9, 1.0, 1.1),
        progress=False,
    )
    assert len(par) == 15 and par.utt_ids == serial.utt_ids
    assert par.utt_ids[:3] == [f"sp0.9-{utts[0].utt_id}", utts[0].utt_id, f"sp1.1-{utts[0].utt_id}"]
    raw = np.load(tmp_path / "par" / "feats.npy", mmap_mode="r")
    assert raw.dtype == np.float16 and raw.shape == (int(par.lengths.sum()), 80)
    assert np.array_equal(raw, np.load(tmp_path / "serial" / "feats.npy"))
    # each entry equals fbank computed directly
    i = par.index_of(utts[3].utt_id)
    direct = fbank(load_wave(utts[3].path, 16000), 16000).numpy()
    np.testing.assert_allclose(par[i], direct, atol=0.02, rtol=2e-3)  # float16 storage
    assert par[i].dtype == np.float32 and par.lengths[i] == direct.shape[0]
    # speed 0.9 is ~1/0.9 longer
    assert abs(par.lengths[0] / par.lengths[1] - 1 / 0.9) < 0.01
    # global CMVN over all frames written
    mean, std = par.cmvn
    allf = np.concatenate([par[j] for j in range(len(par))]).astype(np.float64)
    np.testing.assert_allclose(mean, allf.mean(0), atol=2e-3)
    np.testing.assert_allclose(std, allf.std(0), atol=2e-3)
    # reopened store, and pickling does not copy the memmap
    import pickle

    again = pickle.loads(pickle.dumps(FeatureStore(tmp_path / "par")))
    assert again._feats is None and np.array_equal(again[2], par[2])


def test_noise_augmentation_level_and_reproducibility(data: Path, tmp_path: Path) -> None:
    sr = 8000
    loud = np.zeros(sr, np.float32)
    loud[: sr // 2] = 0.5 * np.sin(np.arange(sr // 2) * 0.3)  # peak frame power 0.125
    noisy = add_noise(loud, sr, 20.0, "k")
    tail = (noisy - loud)[sr // 2 :]
    assert abs(np.mean(tail * tail) / 0.125 - 0.01) < 0.001  # 20 dB below the loudest frame
    assert np.array_equal(add_noise(loud, sr, 20.0, "k"), noisy)
    assert not np.array_equal(add_noise(loud, sr, 20.0, "other"), noisy)
    assert not add_noise(np.zeros(100, np.float32), sr, 20.0, "k").any()  # silence stays silent
    assert noise_snr_db("a", 1, None) is None
    draws = [noise_snr_db(f"u{i}", 1, (10, 30)) for i in range(200)]
    assert 10 <= min(draws) < 12 and 28 < max(draws) <= 30
    assert noise_snr_db("u1", 1, (10, 30)) == draws[1] != noise_snr_db("u1", 2, (10, 30))
    # in the store: each copy its own recorded level; a recomputation is identical
    utts = load_yesno(data, "test")[:2]
    kw = dict(num_workers=0, sample_rate=8000, speeds=(1.0, 1.1), progress=False, seed=3)
    a = compute_features_parallel(utts, tmp_path / "a", noise_snr=(10, 30), **kw)
    compute_features_parallel(utts, tmp_path / "b", noise_snr=(10, 30), **kw)
    clean = compute_features_parallel(utts, tmp_path / "c", **kw)
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert index["noise_snrs"] == [noise_snr_db(u, 3, (10, 30)) for u in a.utt_ids]
    assert json.loads((tmp_path / "c" / "index.json").read_text())["noise_snrs"] == [None] * 4
    assert np.array_equal(
        np.load(tmp_path / "a" / "feats.npy"), np.load(tmp_path / "b" / "feats.npy")
    )
    # noise fills the quiet bins: the lowest filterbank energies rise
    assert np.percentile(a[0], 5) > np.percentile(clean[0], 5) + 1.0


def test_spec_augment_honours_lengths() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 50, 20) + 5.0
    lengths = torch.tensor([50, 30, 10])
    x[1, 30:] = 0.0
    x[2, 10:] = 0.0
    aug = SpecAugment(freq_masks=2, freq_width=5, time_masks=2, time_width=0.2).train()
    y = aug(x, lengths, generator=torch.Generator().manual_seed(1))
    masked = y == 0.0
    assert masked[0].any() and not torch.equal(y, x)
    # padding untouched
    assert torch.equal(y[1, 30:], x[1, 30:]) and torch.equal(y[2, 10:], x[2, 10:])
    # time masks at most 20 % of each length, twice
    full_rows = masked[:, :, :].all(dim=2)  # frames masked in every bin
    assert full_rows[1, :30].sum() <= 2 * 6 and full_rows[2, :10].sum() <= 2 * 2
    # frequency masks at most 2 x 5 bins
    assert masked[0].all(dim=0).sum() <= 10
    assert aug.eval()(x, lengths) is x


# ------------------------------------------------------------------------------- front-ends


def test_conv2d_subsampling_lengths_and_batch_independence() -> None:
    torch.manual_seed(0)
    sub = Conv2dSubsampling(input_size=80, channels=8, output_size=32).eval()
    for t in (7, 8, 10, 11, 100, 101):
        y, n = sub(torch.randn(1, t, 80), torch.tensor([t]))
        assert y.shape == (1, n.item(), 32) and n.item() == ((t - 1) // 2 - 1) // 2
    x = torch.randn(3, 41, 80)
    lengths = torch.tensor([41, 20, 9])
    y, n = sub(x, lengths)
    assert n.tolist() == [9, 4, 1] and sub.output_size == 32
    for b in range(3):
        alone, _ = sub(x[b : b + 1, : lengths[b]], lengths[b : b + 1])
        torch.testing.assert_close(y[b, : n[b]], alone[0], atol=1e-5, rtol=1e-5)
        assert (y[b, n[b] :] == 0).all()
    with pytest.raises(ValueError, match=">= 7 frames"):
        sub(torch.randn(1, 6, 80), torch.tensor([6]))


def test_conv2d_frontend_norm() -> None:
    """frontend_norm: each output frame normalised (the default front end's frames are small);
    padding stays zero; a spec without the key (older model.json) builds without the norm."""
    from seqpipe.models.asr import build_asr_model, model_spec

    torch.manual_seed(0)
    x, lengths = torch.randn(2, 60, 40), torch.tensor([60, 30])
    plain = Conv2dSubsampling(input_size=40, channels=8, output_size=32).eval()
    normed = Conv2dSubsampling(input_size=40, channels=8, output_size=32, norm=True).eval()
    normed.load_state_dict(plain.state_dict(), strict=False)  # same conv and linear weights
    with torch.no_grad():
        y0, n = plain(x, lengths)
        y1, _ = normed(x, lengths)
    assert float(y0[0].detach().std()) < 0.5  # why the option exists
    real = y1[0, : n[0]]
    torch.testing.assert_close(real.mean(-1), torch.zeros(n[0].item()), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        real.std(-1, unbiased=False), torch.ones(n[0].item()), atol=1e-3, rtol=0
    )
    assert (y1[1, n[1] :] == 0).all()
    cfg = dict(
        arch="attention",
        cell="gru",
        emb_size=32,
        hidden_size=16,
        enc_layers=1,
        dec_layers=1,
        bidirectional=True,
        attention="location",
        luong_score="general",
        input_feeding=True,
        bridge=True,
        dropout=0.0,
        tied_embeddings=False,
        subsampling="conv2d",
        conv_channels=8,
        frontend_norm=True,
    )
    spec = model_spec(cfg, 40, 12)
    assert spec["frontend_norm"] is True and "frontend_norm" not in spec["kwargs"]
    assert build_asr_model(spec).encoder.frontend.norm is not None
    del spec["frontend_norm"]
    assert build_asr_model(spec).encoder.frontend.norm is None


def test_pyramidal_reduce_and_encoder() -> None:
    torch.manual_seed(0)
    x = torch.arange(2 * 5 * 2, dtype=torch.float).reshape(2, 5, 2)
    y, n = PyramidalReduce()(x, torch.tensor([5, 3]))
    assert y.shape == (2, 3, 4) and n.tolist() == [3, 2]
    assert y[0, 0].tolist() == [0, 1, 2, 3] and y[0, 2].tolist() == [8, 9, 0, 0]
    assert y[1, 1].tolist() == [14, 15, 0, 0]  # frame 3 of row 1 is padding -> zeroed

    enc = PyramidalBiLSTMEncoder(input_size=6, hidden_size=8, num_layers=3, num_reductions=2).eval()
    feats = torch.randn(3, 17, 6)
    lengths = torch.tensor([17, 9, 4])
    out = enc(feats, lengths)
    assert out.lengths.tolist() == [5, 3, 1] and out.outputs.shape == (3, 5, 16)
    assert out.mask.tolist()[1] == [True, True, True, False, False] and out.hidden.shape == (3, 16)
    for b in range(3):
        alone = enc(feats[b : b + 1, : lengths[b]], lengths[b : b + 1])
        torch.testing.assert_close(
            out.outputs[b, : out.lengths[b]], alone.outputs[0], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(out.hidden[b], alone.hidden[0], atol=1e-5, rtol=1e-5)
    assert (out.outputs[1, 3:] == 0).all()


# ------------------------------------------------------------------------------- corpora


def test_yesno_split_and_transcripts(data: Path) -> None:
    train = load_yesno(data, "train", splits_tsv=MIRROR / "yesno" / "splits.tsv")
    test = load_yesno(data, "test", splits_tsv=MIRROR / "yesno" / "splits.tsv")
    assert len(train) == len(test) == 30 and train.num_skipped == 0
    assert not {u.utt_id for u in train} & {u.utt_id for u in test}
    first = train[0]
    assert first.utt_id == "0_0_0_0_1_1_1_1" and first.text == "NO NO NO NO YES YES YES YES"
    assert abs(first.duration - 6.35) < 0.01 and Path(first.path).is_file()
    # without splits.tsv: Kaldi rule (sorted names, first half train) gives the same split
    assert [u.utt_id for u in load_yesno(data, "train")] == [u.utt_id for u in train]


def test_fsdd_an4_librispeech(data: Path) -> None:
    fsdd_test = load_fsdd(data, "test", speakers=["theo"])
    assert len(fsdd_test) == 50 and {u.text for u in fsdd_test} == set(DIGIT_WORDS)
    assert fsdd_test[0].speaker == "theo"
    an4 = load_an4(data, "all")
    assert len(an4) == 70 and len(load_an4(data, "test")) == 10
    assert {u.utt_id: u.text for u in an4}["an147-fclc-b"] == "q e e a six"
    libri = load_librispeech(data / "LibriSpeech")
    assert len(libri) == 4
    assert [u.utt_id for u in libri][:2] == ["1089-134686-0000", "1089-134686-0001"]
    assert libri[1].text == "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM"
    assert libri[1].speaker == "1089"


def test_kaldi_dir_and_tsv_report_problems(data: Path, tmp_path: Path) -> None:
    wavs = sorted((data / "waves_yesno").glob("*.wav"))[:3]
    kdir = tmp_path / "kaldi"
    kdir.mkdir()
    (kdir / "wav.scp").write_text(f"a {wavs[0]}\nb {wavs[1]}\nc {tmp_path / 'gone.wav'}\n")
    (kdir / "text").write_text("a NO NO\nb   \nc YES\n")
    (kdir / "utt2spk").write_text("a s1\nb s1\nc s2\n")
    with pytest.raises(DatasetError, match="empty transcript"):
        load_kaldi_dir(kdir, on_error="stop")
    utts = load_kaldi_dir(kdir, on_error="skip")
    assert [u.utt_id for u in utts] == ["a"] and utts[0].speaker == "s1" and utts.num_skipped == 2
    assert any("gone.wav" in m for m in utts.skipped)

    sub = tmp_path / "tsv" / "audio"
    sub.mkdir(parents=True)
    (sub / "x.wav").write_bytes(wavs[2].read_bytes())
    tsv = tmp_path / "tsv" / "list.tsv"
    tsv.write_text("path\ttranscript\naudio/x.wav\tYES NO\naudio/missing.wav\tNO\n")
    with pytest.raises(DatasetError, match="missing.wav"):
        load_tsv(tsv)
    utts = load_tsv(tsv, on_error="skip")
    assert len(utts) == 1 and utts.num_skipped == 1
    assert utts[0] == Utterance(
        "audio-x", str((sub / "x.wav").resolve()), utts[0].duration, "YES NO", ""
    )


def test_connected_digits_deterministic_and_speaker_disjoint(data: Path, tmp_path: Path) -> None:
    kwargs = dict(
        num_utts={"train": 6, "valid": 2, "test": 3},
        test_speakers=["theo"],
        valid_speakers=["george"],
    )
    a = build_connected_digits(data, tmp_path / "a", seed=3, **kwargs)
    b = build_connected_digits(data, tmp_path / "b", seed=3, **kwargs)
    c = build_connected_digits(data, tmp_path / "c", seed=4, **kwargs)

    def digest(corpus: dict) -> list[tuple[str, str, str]]:
        return [
            (u.utt_id, u.text, hashlib.sha256(Path(u.path).read_bytes()).hexdigest())
            for split in ("train", "valid", "test")
            for u in corpus[split]
        ]

    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    assert {u.speaker for u in a["test"]} == {"theo"}
    assert {u.speaker for u in a["valid"]} == {"george"}
    assert not {u.speaker for u in a["train"]} & {"theo", "george"}
    for u in a["train"] + a["test"]:
        words = u.text.split()
        assert 2 <= len(words) <= 7
        wave, sr = read_audio(u.path)
        assert sr == 8000 and abs(len(wave) / sr - u.duration) < 1e-6
        assert 0.15 * len(words) < u.duration < 0.3 * (len(words) + 1) + 2.3 * len(words)
    # the split lists written beside the audio load back
    assert [u.text for u in load_tsv(tmp_path / "a" / "test.tsv")] == [u.text for u in a["test"]]
    # a speaker excluded (nested validation) is in no split; the valid/test utterances stay
    d = build_connected_digits(data, tmp_path / "d", seed=3, exclude_speakers=["nicolas"], **kwargs)
    assert {u.speaker for u in a["train"]} - {u.speaker for u in d["train"]} == {"nicolas"}
    assert digest(d)[6:] == digest(a)[6:]
    with pytest.raises(ValueError, match=r"excluded speakers also in test or valid: \['theo'\]"):
        build_connected_digits(data, tmp_path / "e", seed=3, exclude_speakers=["theo"], **kwargs)


def test_synthetic_voices_are_deterministic_distinct_and_join_training_only(
    data: Path, tmp_path: Path
) -> None:
    voices = synth.digit_voices(6)
    assert voices == synth.digit_voices(6) and len(set(voices)) == 6
    assert len({v.split("+")[0] for v in voices}) > 1  # accents mixed, not one accent first
    spoken = synth.synthesize_digits(voices, DIGIT_WORDS, takes=2, sample_rate=8000, seed=5)
    again = synth.synthesize_digits(voices, DIGIT_WORDS, takes=2, sample_rate=8000, seed=5)
    assert list(spoken) == [synth.speaker_name(v) for v in voices]
    for spk, recs in spoken.items():
        assert "_" not in spk and "+" not in spk
        assert [label for label, _ in recs] == list(range(10)) * 2
        for (_, w), (_, w2) in zip(recs, again[spk], strict=True):
            assert np.array_equal(w, w2)  # same samples on every call
            assert w.dtype == np.float32 and 0.15 < len(w) / 8000 < 1.2  # one trimmed word
            assert np.abs(w).max() == pytest.approx(synth.PEAK)
    # voices and takes differ from each other
    sevens = [w for recs in spoken.values() for label, w in recs if label == 7]
    assert len({(len(w), round(float(np.abs(w).sum()), 3)) for w in sevens}) == len(sevens)
    with pytest.raises(InputError, match="no voice 'zz-nowhere'"):
        synth.synthesize_digits(["zz-nowhere"], DIGIT_WORDS, 1, 8000, seed=0)

    kwargs = dict(num_utts={"train": 6, "valid": 2, "test": 3}, test_speakers=["theo"])
    kwargs["valid_speakers"] = ["george"]
    plain = build_connected_digits(data, tmp_path / "plain", seed=3, **kwargs)
    mixed = build_connected_digits(
        data, tmp_path / "mixed", seed=3, synthetic=spoken, synthetic_utts=5, **kwargs
    )
    real = [u for u in mixed["train"] if not u.speaker.startswith("tts-")]
    fake = [u for u in mixed["train"] if u.speaker.startswith("tts-")]
    assert len(real) == 6 and len(fake) == 5 and {u.speaker for u in fake} <= set(spoken)
    for split in ("train", "valid", "test"):  # the real utterances are unchanged, byte for byte
        got = real if split == "train" else mixed[split]
        assert [Path(u.path).read_bytes() for u in got] == [
            Path(u.path).read_bytes() for u in plain[split]
        ]
    assert not any(u.speaker.startswith("tts-") for u in mixed["valid"] + mixed["test"])


# ------------------------------------------------------------------------------- archives


def _tar_with(
    path: Path, name: str, link: str | None = None, kind: bytes = tarfile.REGTYPE
) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("good.txt")  # a safe member first: it must not be written either
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        if kind != tarfile.REGTYPE:
            info.type, info.linkname = kind, link or ""
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return path


@pytest.mark.parametrize(
    "name,link,kind",
    [
        ("../evil", None, tarfile.REGTYPE),
        ("ok/../../evil", None, tarfile.REGTYPE),
        ("/tmp/evil", None, tarfile.REGTYPE),
        ("link", "../../etc/passwd", tarfile.SYMTYPE),
        ("link", "/etc/passwd", tarfile.SYMTYPE),
        ("hard", "../outside", tarfile.LNKTYPE),
        ("dev", None, tarfile.CHRTYPE),
        ("fifo", None, tarfile.FIFOTYPE),
    ],
)
def test_safe_extract_refuses_escaping_members(tmp_path: Path, name: str, link, kind) -> None:
    archive = _tar_with(tmp_path / "bad.tar.gz", name, link, kind)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(UnsafeArchiveError, match="refusing member"):
        safe_extract_tar(archive, dest)
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not (tmp_path / "out").exists()  # nothing written before the checks, no folder


def test_extract_once_is_idempotent(tmp_path: Path) -> None:
    archive = MIRROR / "librispeech_sample" / "librispeech_test-clean_1089_sample.tar.gz"
    dest = extract_once(archive, tmp_path / "ls")
    flac = next(dest.rglob("*.flac"))
    mtime = flac.stat().st_mtime_ns
    extract_once(archive, tmp_path / "ls")
    assert flac.stat().st_mtime_ns == mtime and len(load_librispeech(dest)) == 4


def test_utterance_normalisation_modes() -> None:
    from seqpipe.asr.transcribe import make_normalizer

    rng = np.random.default_rng(0)
    f = (rng.standard_normal((50, 8)) * 3 + 7).astype(np.float16)
    mean, std = np.full(8, 2.0, np.float32), np.full(8, 4.0, np.float32)
    g = (f.astype(np.float32) - 2.0) / 4.0
    assert np.allclose(make_normalizer((mean, std), "none")(f), g, atol=1e-6)
    m = make_normalizer((mean, std), "mean")(f)
    assert np.allclose(m, g - g.mean(0), atol=1e-5)
    mv = make_normalizer(None, "meanvar")(f)
    assert mv.dtype == np.float32
    assert np.allclose(mv.mean(0), 0, atol=1e-5) and np.allclose(mv.std(0), 1, atol=1e-4)
    assert make_normalizer(None, "meanvar")(f[:0]).shape == (0, 8)  # no frames: unchanged
    with pytest.raises(ValueError):
        make_normalizer(None, "max")


def test_speaker_cmn_means_per_speaker_and_speed(data: Path, tmp_path: Path) -> None:
    """features.speaker_cmn: each row's stored mean is its (speaker, speed) group's mean over
    all frames of the group, after global CMVN; no speaker id: the utterance's own mean; the
    split loader subtracts it."""
    from seqpipe.asr.features import save_speaker_means
    from seqpipe.asr.transcribe import split_loader

    utts = load_yesno(data, "test")[:3]
    kw = dict(num_workers=0, sample_rate=8000, speeds=(1.0, 1.1), progress=False)
    store = compute_features_parallel(utts, tmp_path / "feats" / "test", **kw)
    per = len(store) // len(utts)
    speakers = [["a", "a", ""][i // per] for i in range(len(store))]
    mean, std = np.full(store.num_mel_bins, 1.0), np.full(store.num_mel_bins, 2.0)
    # groups: a@1.0, a@1.1, and the 3rd utterance (no speaker id) at each speed
    assert save_speaker_means(store, speakers, (mean, std)) == 4
    means = store.speaker_means()
    for i in range(len(store)):
        group = [j for j in range(len(store)) if store.speeds[j] == store.speeds[i]]
        group = [j for j in group if speakers[j] == speakers[i] == "a"] or [i]
        frames = np.concatenate([store[j] for j in group]).astype(np.float64)
        np.testing.assert_allclose(means[i], (frames.mean(0) - 1.0) / 2.0, rtol=1e-4, atol=1e-5)
    assert not np.allclose(means[0], means[1])  # the two speeds are two speakers
    (tmp_path / "norm.json").write_text('{"global_cmvn": false, "speaker_cmn": "eval"}')
    load = split_loader(tmp_path, store)
    np.testing.assert_allclose(load(2), store[2] - means[2], atol=1e-6)
    (store.dir / "speaker_means.npy").unlink()  # a split without means: the utterance rule
    assert not store.has_speaker_means
    np.testing.assert_allclose(split_loader(tmp_path, store)(2), store[2], atol=1e-6)
    with pytest.raises(ValueError, match="save_speaker_means|speaker ids"):
        save_speaker_means(store, speakers[:-1], None)


def test_speaker_cmn_excludes_utterance_cmn() -> None:
    from seqpipe.asr.config import FeaturesConfig

    assert FeaturesConfig(speaker_cmn="all").speaker_cmn == "all"
    assert FeaturesConfig(speaker_cmn="eval", utterance_cmn=True).utterance_cmn
    with pytest.raises(ValueError, match="speaker_cmn: all replaces"):
        FeaturesConfig(speaker_cmn="all", utterance_cmn=True)
