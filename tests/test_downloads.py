"""Downloads from public sources (issue 17), against an HTTP server on the loopback address
started here, serving files built from the mirror: checksums (sha256, md5), resuming with
Range, a wrong file, and a registry entry whose upstream is a list of files — the yesno recipe
prepared with no mirror at all, from the same files the mirror's tarball was made of."""

from __future__ import annotations

import hashlib
import http.server
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seqpipe.core.pipeline import Pipeline
from seqpipe.core.recipe import load_recipe
from seqpipe.data.download import Checksum, download
from seqpipe.errors import InputError

from .conftest import MIRROR, REPO, run_cli

YESNO = str(REPO / "recipes" / "asr_yesno.yaml")
YESNO_BASE = "keighrim/kaldi-yesno-tutorial/f4e2910de0d3b58f5f3b5cd10a8e57712c60b34a/"


class Server:
    """Serves ``files`` (URL path -> bytes) with Range support. ``cut[path] = n``: the first
    answer for ``path`` stops after n bytes (a dropped connection); ``requests`` records
    (path, Range header) of every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((path, rng))
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                n = server.cut.pop(path, None)
                self.wfile.write(body[start : start + n] if n is not None else body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def test_a_fresh_download_is_verified_by_sha256_or_md5(server: Server, tmp_path: Path):
    body = bytes(range(256)) * 4000
    server.files["a.bin"] = body
    for kind in ("sha256", "md5"):
        dest = tmp_path / kind / "a.bin"
        download(server.url + "a.bin", dest, Checksum(kind, hashlib.new(kind, body).hexdigest()))
        assert dest.read_bytes() == body and not dest.with_name("a.bin.part").exists()


def test_an_interrupted_download_resumes_with_range(server: Server, tmp_path: Path):
    body = np.random.default_rng(0).bytes(300_000)
    server.files["big.bin"] = body
    server.cut["big.bin"] = 100_000  # the first answer drops after 100 kB
    dest = tmp_path / "big.bin"
    download(
        server.url + "big.bin",
        dest,
        Checksum("sha256", hashlib.sha256(body).hexdigest()),
        backoff=0,
    )
    assert dest.read_bytes() == body
    assert server.requests == [("big.bin", None), ("big.bin", "bytes=100000-")]


def test_a_wrong_file_is_kept_aside_and_named(server: Server, tmp_path: Path):
    server.files["x.bin"] = b"not what the registry says"
    want = hashlib.sha256(b"the real file").hexdigest()
    got = hashlib.sha256(b"not what the registry says").hexdigest()
    dest = tmp_path / "x.bin"
    with pytest.raises(InputError) as e:
        download(server.url + "x.bin", dest, Checksum("sha256", want))
    assert f"expected {want}, got {got}" in str(e.value) and server.url + "x.bin" in str(e.value)
    assert not dest.exists() and dest.with_name("x.bin.bad").is_file()
    with pytest.raises(InputError, match="HTTP 404"):
        download(server.url + "missing.bin", tmp_path / "m.bin", Checksum("md5", "0" * 32))


def _serve_yesno_upstream(server: Server) -> None:
    """The repository files the mirror's yesno tarball was made of, at their raw URLs."""
    with tarfile.open(MIRROR / "yesno" / "waves_yesno.tar.gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                server.files[YESNO_BASE + m.name] = tar.extractfile(m).read()


def _prepared(ws: Path) -> dict[str, tuple[str, str, bytes]]:
    """utt id -> (split, transcript, audio samples) of the yesno prepare artifact in ``ws``."""
    pipe = Pipeline(load_recipe(YESNO, []), ws)
    prep = pipe.store.get("prepare", pipe.keys()["prepare"]).path
    out = {}
    for split in ("train", "valid", "test"):
        rows = (prep / f"{split}.tsv").read_text().splitlines()
        header = rows[0].split("\t")
        for row in rows[1:]:
            r = dict(zip(header, row.split("\t"), strict=False))
            audio = Path(r["path"]) if Path(r["path"]).is_absolute() else prep / r["path"]
            out[r.get("utt_id", audio.stem)] = (split, r["text"], sf.read(audio)[0].tobytes())
    return out


def test_yesno_prepares_the_same_utterances_from_its_upstream_files(server: Server, tmp_path: Path):
    """No mirror: the upstream raw files (served here in place of raw.githubusercontent.com)
    are downloaded, verified against data/yesno_waves.sha256 and prepared exactly as the
    mirror's tarball is; a file that differs is exit 2 naming both checksums."""
    _serve_yesno_upstream(server)
    with_mirror, upstream, bad = tmp_path / "mirror", tmp_path / "upstream", tmp_path / "bad"
    for ws in (with_mirror, upstream, bad):
        ws.mkdir()
    run_cli("run", YESNO, "--to", "prepare", cwd=with_mirror, check=True)
    env = {
        "SEQPIPE_MIRROR": "",
        "SEQPIPE_DOWNLOADS": str(tmp_path / "downloads"),
        "SEQPIPE_URL_REWRITE": f"https://raw.githubusercontent.com/={server.url}",
    }
    proc = run_cli("run", YESNO, "--to", "prepare", cwd=upstream, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "61 upstream files from https://raw.githubusercontent.com/keighrim" in proc.stderr
    assert sum(1 for p, _ in server.requests if p.endswith(".wav")) == 60
    a, b = _prepared(with_mirror), _prepared(upstream)
    assert len(a) == 60 and a == b
    # the key does not depend on where the files came from
    assert (
        json.loads((with_mirror / "exp/asr_yesno/keys.json").read_text())["prepare"]
        == json.loads((upstream / "exp/asr_yesno/keys.json").read_text())["prepare"]
    )
    # a server that returns a wrong file: exit 2, both checksums, nothing prepared
    name = YESNO_BASE + "waves_yesno/0_0_0_0_1_1_1_1.wav"
    server.files[name] = server.files[name][:-100] + bytes(100)
    env["SEQPIPE_DOWNLOADS"] = str(tmp_path / "downloads2")
    proc = run_cli("run", YESNO, "--to", "prepare", cwd=bad, env=env)
    last = proc.stderr.splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error: ") and "Traceback" not in proc.stderr
    assert "sha256 mismatch: expected 76b1561d48f7a54f" in last and ", got " in last, last
    assert not list((bad / "cache").glob("prepare/*/manifest.json"))


@pytest.mark.parametrize("dataset", ["yesno", "fsdd", "librispeech_sample"])
def test_each_file_list_is_what_the_mirror_tarball_holds(dataset: str):
    """The registry's upstream lists (data/*.sha256) name exactly the files, with their
    sha256, that the mirror's re-packed tarball holds: the two sources prepare the same."""
    from seqpipe.data.registry import dataset_entry, read_file_list

    ((rel, info),) = dataset_entry(dataset)["files"].items()
    listed = {name: sha for sha, name in read_file_list(info["upstream"]["list"])}
    with tarfile.open(MIRROR / rel) as tar:
        held = {
            m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()
            for m in tar.getmembers()
            if m.isfile()
        }
    assert listed == held
    assert info["upstream"]["url"].startswith("https://raw.githubusercontent.com/")


def test_an_extra_fsdd_speaker_is_downloaded_and_joins_training_only(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """data.extra_speakers: a speaker that the mirror's tarball leaves out is downloaded file by
    file from its upstream list (served here), verified, fetched once, and joins the training
    pool of fsdd_connected while the valid and test utterances stay byte for byte."""
    from seqpipe.data import registry
    from seqpipe.data.asr_datasets import build_connected_digits

    root = registry.safe_extract_tar(
        MIRROR / "fsdd" / "fsdd_recordings_train_5spk.tar.gz", tmp_path
    )
    base, lines = "someone/fsdd/0123/", []
    for digit in range(10):  # 20 of george's takes under a new name: the mechanism is tested
        for take in range(2):
            body = (root / "recordings" / f"{digit}_george_{take}.wav").read_bytes()
            name = f"recordings/{digit}_newvoice_{take}.wav"
            server.files[base + name] = body
            lines.append(f"{hashlib.sha256(body).hexdigest()}  {name}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "newvoice.sha256").write_text("\n".join(lines) + "\n")
    extra = {"newvoice": {"url": server.url + base, "list": "newvoice.sha256"}}
    monkeypatch.setattr(registry, "REGISTRY_FILE", tmp_path / "data" / "registry.yaml")
    monkeypatch.setattr(registry, "dataset_entry", lambda name: {"extra_speakers": extra})
    monkeypatch.setenv("SEQPIPE_DOWNLOADS", str(tmp_path / "downloads"))

    folder = registry.fetch_extra_speaker("fsdd", "newvoice")
    assert folder == tmp_path / "downloads" / "fsdd" / "newvoice" / "upstream"
    assert len(list((folder / "recordings").glob("*_newvoice_*.wav"))) == len(server.requests) == 20
    assert registry.fetch_extra_speaker("fsdd", "newvoice") == folder
    assert len(server.requests) == 20  # verified copies are not downloaded again
    with pytest.raises(InputError, match=r"no extra speaker 'bob' \(newvoice\)"):
        registry.fetch_extra_speaker("fsdd", "bob")

    kwargs = dict(num_utts={"train": 60, "valid": 3, "test": 3}, seed=3)
    kwargs |= dict(test_speakers=["theo"], valid_speakers=["george"])
    plain = build_connected_digits(root, tmp_path / "plain", **kwargs)
    more = build_connected_digits([root, folder], tmp_path / "more", **kwargs)
    assert "newvoice" in {u.speaker for u in more["train"]}
    assert "newvoice" not in {u.speaker for u in plain["train"]}
    for split in ("valid", "test"):
        assert [Path(u.path).read_bytes() for u in more[split]] == [
            Path(u.path).read_bytes() for u in plain[split]
        ]


def test_the_registry_names_fsdd_sixth_speaker_at_the_upstream_commit(tmp_path: Path):
    """lucas (left out of the mirror's tarball): all 500 takes, from the same commit as the
    other five speakers' files; asking for extra speakers of another dataset is exit 2."""
    from seqpipe.data.registry import dataset_entry, read_file_list

    entry = dataset_entry("fsdd")
    ((_, info),) = entry["files"].items()
    lucas = entry["extra_speakers"]["lucas"]
    assert lucas["url"] == info["upstream"]["url"]
    names = sorted(name for _, name in read_file_list(lucas["list"]))
    want = sorted(f"recordings/{d}_lucas_{t}.wav" for d in range(10) for t in range(50))
    assert names == want
    proc = run_cli("config", YESNO, "data.extra_speakers=[lucas]", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "extra_speakers: only for datasets fsdd_digits, fsdd_connected" in proc.stderr
