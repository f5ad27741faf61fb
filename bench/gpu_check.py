"""The GPU check: what the first GPU seqpipe meets must show, in one run of about 8 minutes.

Prints one JSON object. On a machine without CUDA it refuses: exit 2 and one line. Steps, in a
fresh workspace (``--workspace``, default a temporary folder), data from ``SEQPIPE_MIRROR``
(default ../shared/data):

1. ``amp_<mode>``: recipes/mt_small.yaml trained ``--seconds`` (90) on the GPU with
   ``train.amp`` none, bf16 and fp16 each (GPU-sized batches: ``--max-tokens``, 16000):
   updates, real tokens/s (and its ratio to 2 CPU cores, the README's 6,768 tok/s), first and
   last logged training loss (falling), batches skipped for NaN/inf, peak GPU memory, and the
   validation BLEU at the end.
2. ``decode``: the bf16 model decodes test_2016_flickr (1,000 sentences) on the GPU, beam 5
   and greedy: sentences/s and BLEU (decode + score stages).
3. ``torchrun_nccl``: ``torchrun --nproc_per_node=1`` (the NCCL backend, its collectives
   on the GPU) trains 120 updates with the plateau scheduler forced to cut the learning rate
   (``plateau_patience=0``, ``lr`` 1e-5, BLEU of 2 sentences, validating every 30 updates): the learning rates
   seen at each validation, and the rank's weights digest.
4. ``asr_adapt``: recipes/asr_small.yaml (small subset) trained briefly on the GPU, then decoded
   with ``decode.adapt=lin``, 2 rounds (backward through cuDNN RNNs at decode time): WER of
   both passes (a barely trained model: this checks that it runs, not its accuracy).

On a machine without a GPU, ``--allow-cpu`` runs the same steps on the CPU (to test this
script; ``--seconds 15 --amp none --max-tokens 4000``: about 2 minutes on 2 cores).

Usage: python bench/gpu_check.py [--seconds 90] [--max-tokens 16000] [--workspace DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MT = str(REPO / "recipes" / "mt_small.yaml")
ASR = str(REPO / "recipes" / "asr_small.yaml")
CPU_TOK_S = 6768  # mt_small on 2 CPU threads (README, results table)


def refuse_without_cuda(allow_cpu: bool) -> str:
    """The device to check: ``cuda``; without CUDA, exit 2 with one line (``--allow-cpu``:
    run the same steps on the CPU, to test this script)."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if allow_cpu:
        return "cpu"
    print(
        "gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a "
        "GPU machine",
        file=sys.stderr,
    )
    raise SystemExit(2)


def seqpipe(ws: Path, *args: str, torchrun: bool = False) -> tuple[str, float]:
    """Run the seqpipe CLI in ``ws``; (stderr, wall seconds). A failure stops the check."""
    cmd = [sys.executable, "-m", "seqpipe", *args]
    if torchrun:
        launcher = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
        cmd = [launcher, "--nproc_per_node=1", "--master_port=29533", "-m", "seqpipe", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"gpu_check: `{' '.join(args[:3])} ...` failed ({proc.returncode})")
    return proc.stderr, time.perf_counter() - t0


def exp_file(ws: Path, name: str, stage: str, file: str) -> Path:
    return ws / "exp" / name / stage / file


def metrics(ws: Path, name: str) -> list[dict]:
    text = exp_file(ws, name, "train", "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def train_amp(ws: Path, device: str, amp: str, a: argparse.Namespace) -> dict[str, object]:
    name = f"gpu_{amp}"
    args = [
        MT,
        f"name={name}",
        f"train.device={device}",
        f"decode.device={device}",
        f"train.amp={amp}",
        f"train.max_minutes={a.seconds / 60}",
        f"train.max_tokens={a.max_tokens}",
        "train.valid_every=100000",
        "train.valid_max_sentences=500",
        "train.log_every=20",
        "train.progress=false",
    ]
    _, wall = seqpipe(ws, "run", *args, "--to", "train")
    info = json.loads(exp_file(ws, name, "train", "train.json").read_text())
    rows = metrics(ws, name)
    losses = [r["loss"] for r in rows if "loss" in r]
    return {
        "steps": info["steps"],
        "tokens_per_second": info["tokens_per_second"],
        "ratio_vs_2_cpu_cores": round(info["tokens_per_second"] / CPU_TOK_S, 2),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "loss_falls": bool(losses) and losses[-1] < losses[0],
        "nan_batches": info["nan_batches"],
        "valid_bleu": info["best"],
        "peak_memory_mib": info.get("cuda_peak_memory_mib"),
        "wall_s": round(wall, 1),
        "args": args[1:],
    }


def decode_speed(ws: Path, device: str, args: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for search, beam in (("beam", 5), ("greedy", 1)):
        name = f"gpu_decode_{search}"
        run = [MT, *[x for x in args if not x.startswith("name=")], f"name={name}"]
        seqpipe(ws, "run", *run, f"decode.search={search}", f"decode.beam_size={beam}")
        dec = json.loads(exp_file(ws, name, "decode", "decode.json").read_text())
        test = json.loads((ws / "exp" / name / "scores.json").read_text())["splits"]["test"]
        out[search] = {
            "sentences_per_second": dec["splits"]["test"]["sentences_per_second"],
            "bleu": test["bleu"]["score"],
            "chrf": test["chrf"]["score"],
        }
    return out


def torchrun_plateau(ws: Path, device: str) -> dict[str, object]:
    name = "gpu_torchrun"
    args = [
        MT,
        f"name={name}",
        f"train.device={device}",
        "train.scheduler=plateau",
        "train.plateau_patience=0",
        "train.lr=1e-5",  # BLEU on 2 sentences barely moves: a validation without gain
        "train.min_lr=1e-7",  # (mt_small's floor is 1e-5)
        "train.valid_every=30",
        "train.max_steps=120",
        "train.valid_max_sentences=2",
        "train.progress=false",
    ]
    _, wall = seqpipe(ws, "run", *args, "--to", "train", torchrun=True)
    info = json.loads(exp_file(ws, name, "train", "train.json").read_text())
    lrs = [r["lr"] for r in metrics(ws, name) if "valid" in r]
    return {
        "world_size": info.get("world_size"),
        "device": info.get("device"),
        "valid_lrs": lrs,
        "lr_cut": len(lrs) > 1 and lrs[-1] < lrs[0],
        "weights_sha256": info.get("weights_sha256_per_rank"),
        "wall_s": round(wall, 1),
    }


def asr_adapt(ws: Path, device: str) -> dict[str, object]:
    args = [
        ASR,
        "name=gpu_asr",
        "data.utterances={train: 300, valid: 30, test: 60}",
        "features.speed_perturb=[1.0]",
        "train.members=1",
        f"train.device={device}",
        f"decode.device={device}",
        "train.max_steps=300",
        "train.valid_every=300",
        "train.warmup_steps=50",
        "train.progress=false",
        "decode.adapt=lin",
        "decode.adapt_rounds=2",  # that it runs on the GPU, not the recipe's 12 rounds' accuracy
    ]
    _, wall = seqpipe(ws, "run", *args)
    test = json.loads((ws / "exp" / "gpu_asr" / "scores.json").read_text())["splits"]["test"]
    dec = json.loads(exp_file(ws, "gpu_asr", "decode", "decode.json").read_text())
    return {
        "wer": test["wer"]["score"],
        "first_pass_wer": test.get("first_pass", {}).get("wer"),
        "adapted_speakers": dec["splits"]["test"].get("speakers"),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=90, help="training seconds per AMP mode")
    ap.add_argument("--max-tokens", type=int, default=16000, help="train.max_tokens on the GPU")
    ap.add_argument("--amp", default="none,bf16,fp16", help="the AMP modes to train")
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)  # tests
    a = ap.parse_args()
    device = refuse_without_cuda(a.allow_cpu)
    os.environ.setdefault("SEQPIPE_MIRROR", str(REPO.parent / "shared" / "data"))
    os.environ["PYTHONUNBUFFERED"] = "1"
    ws = a.workspace or Path(tempfile.mkdtemp(prefix="seqpipe-gpu-check-"))
    ws.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict[str, object] = {"device": device}
    if device == "cuda":
        import torch

        res["gpu"] = torch.cuda.get_device_name(0)
        res["torch"] = torch.__version__
    seqpipe(ws, "run", MT, "--to", "tokenize")
    trained = {}
    for amp in a.amp.split(","):
        trained[amp] = train_amp(ws, device, amp, a)
        res[f"amp_{amp}"] = trained[amp]
        print(json.dumps({f"amp_{amp}": trained[amp]}), file=sys.stderr, flush=True)
    decoded = "bf16" if "bf16" in trained else next(iter(trained))
    res["decode"] = {
        "model": f"amp_{decoded}",
        **decode_speed(ws, device, trained[decoded]["args"]),
    }
    res["torchrun_nccl"] = torchrun_plateau(ws, device)
    res["asr_adapt"] = asr_adapt(ws, device)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
