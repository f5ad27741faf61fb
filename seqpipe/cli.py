"""The ``seqpipe`` command. Thin: parse, call, print.

Exit codes: 0 ok, 2 bad input (recipe, files, data, a corrupt artifact), 1 a failure inside a
stage, 75 an artifact it needs is being built by another run (``--wait`` waits).
``--debug`` shows tracebacks.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from seqpipe.errors import InputError, SeqpipeError

STAGE_HELP = "prepare, tokenize|features, train, decode, score"


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("seqpipe")
    if not any(getattr(h, "_seqpipe_console", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        h._seqpipe_console = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One clear line and the right exit code; the traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            return fn(*args, **kwargs)
        except SeqpipeError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted (a rerun resumes where it stopped)", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the promise is one line unless --debug
            if debug:
                raise
            click.echo(
                f"error: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True
            )
            sys.exit(1)

    return wrapper


class _Group(click.Group):
    """Usage errors (a missing argument, a recipe path that is a folder) in one line and exit
    code 2, as every other error."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        try:
            code = super().main(*args, **kwargs, standalone_mode=False)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.option("-v", "--verbose", is_flag=True, help="More log output.")
@click.version_option(package_name="seqpipe")
def main(debug: bool, verbose: bool) -> None:
    """seqpipe: staged, cached sequence-to-sequence experiments (MT and ASR)."""
    from seqpipe.core.runtime import tune_allocator

    tune_allocator()
    _setup_logging(verbose)


_format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv", "json"]),
    default="table",
    show_default=True,
    help="Leaderboard output format.",
)


def _workspace_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-w",
        "--workspace",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        envvar="SEQPIPE_WORKSPACE",
        show_default=True,
        help="Folder holding cache/ and exp/ (env SEQPIPE_WORKSPACE).",
    )(fn)


def _load(recipe: str, overrides: tuple[str, ...]):
    from seqpipe.core.recipe import load_recipe

    return load_recipe(recipe, list(overrides))


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--from", "start", metavar="STAGE", help=f"Start at this stage ({STAGE_HELP}).")
@click.option("--to", "stop", metavar="STAGE", help="Stop after this stage.")
@click.option("--only", metavar="STAGE", help="Run just this stage (its inputs must exist).")
@click.option("--force", multiple=True, metavar="STAGE", help="Rerun STAGE even if cached.")
@click.option("--wait", is_flag=True, help="Wait for an artifact another run is building.")
@click.option(
    "--verify", is_flag=True, help="Check every cached artifact by sha256 (not only sizes)."
)
@_workspace_option
@handle_errors
def run(
    recipe: str,
    overrides: tuple[str, ...],
    start: str | None,
    stop: str | None,
    only: str | None,
    force: tuple[str, ...],
    wait: bool,
    verify: bool,
    workspace: Path,
) -> None:
    """Run RECIPE's stages, skipping what is cached. OVERRIDES: key=value (train.lr=5e-4)."""
    from seqpipe.core.pipeline import Pipeline

    t0 = time.perf_counter()
    r = _load(recipe, overrides)
    pipe = Pipeline(
        r, workspace, debug=bool(click.get_current_context().find_root().params["debug"])
    )
    done = pipe.run(only=only, start=start, stop=stop, force=force, wait=wait, verify=verify)
    ran = pipe.ran
    if "score" in done:
        _print_scores(done["score"].path)
    msg = f"{len(done)} stage(s) up to date" if not ran else f"ran {', '.join(ran)}"
    click.echo(f"{msg} in {time.perf_counter() - t0:.2f} s; exp: {pipe.exp_dir}", err=True)


def _print_scores(path: Path) -> None:
    import json

    f = path / "scores.json"
    if not f.is_file():
        return
    scores = json.loads(f.read_text())
    for split, s in scores.get("splits", {}).items():
        parts = []
        for m in ("bleu", "chrf", "wer", "cer"):
            if m in s:
                parts.append(f"{m.upper()} {s[m]['score']:.2f}")
        sig = s.get("bleu", {}).get("signature") or s.get("wer", {}).get("normalization", "")
        click.echo(f"{split}: {'  '.join(parts)}  ({sig})")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--verify", is_flag=True, help="Check every file's sha256 against its manifest.")
@_workspace_option
@handle_errors
def status(recipe: str, overrides: tuple[str, ...], verify: bool, workspace: Path) -> None:
    """Show every stage of RECIPE: key, state (done/corrupt/running/partial/stale/missing),
    size, time; running: the process building it. Exit code 2 when an artifact is corrupt."""
    from seqpipe.core.pipeline import Pipeline

    pipe = Pipeline(_load(recipe, overrides), workspace)
    rows = pipe.status_rows(verify)
    click.echo(f"{'stage':<9} {'key':<17} {'state':<8} {'size':>9} {'wall':>9}")
    for row in rows:
        size = _human_bytes(row["bytes"]) if row["bytes"] is not None else "-"
        wall = f"{row['wall_s']:.1f} s" if row["wall_s"] is not None else "-"
        line = f"{row['stage']:<9} {row['key']:<17} {row['state']:<8} {size:>9} {wall:>9}"
        click.echo(line + (f"  ({row['builder']})" if row.get("builder") else ""))
    if any(row["state"] == "corrupt" for row in rows):
        sys.exit(2)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@handle_errors
def config(recipe: str, overrides: tuple[str, ...]) -> None:
    """Print the fully resolved RECIPE (defaults filled in, overrides applied)."""
    from seqpipe.core.recipe import dump_recipe

    click.echo(dump_recipe(_load(recipe, overrides)), nl=False)


# ---------------------------------------------------------------------------------- using models
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".sph", ".mp3", ".opus", ".aiff", ".aif")


_CHECKPOINTS = click.Choice(["best", "last", "averaged"])
_SET_OPTION = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Recipe override (repeatable)."
)
_DECODE_OPTIONS = [  # (flags, click.option keywords); "recipe's": the recipe's decode.* key
    (
        ("-o", "--output"),
        dict(type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout"),
    ),
    (("--beam",), dict(type=int, help="Beam size (default: the recipe's).")),
    (("--nbest",), dict(type=int, default=1, help="N best: LINE<TAB>RANK<TAB>SCORE<TAB>TEXT.")),
    (("--search",), dict(help="MT: beam|greedy; ASR: ctc_greedy|ctc_beam|joint|beam|greedy|auto")),
    (("--alpha",), dict(type=float, help="GNMT length penalty (default: the recipe's).")),
    (("--batch-tokens",), dict(type=int, help="Source tokens (ASR: frames) per batch.")),
    (("--shortlist",), dict(type=int, metavar="K", help="MT: K lexical candidates a piece.")),
    (
        ("--alignment",),
        dict(is_flag=True, default=None, help="MT: add TAB + word alignment (Pharaoh: 0-0 1-2)."),
    ),
    (("--checkpoint",), dict(type=_CHECKPOINTS, help="Which weights (default: the recipe's).")),
    (("--quantize",), dict(type=click.Choice(["none", "int8"]), help="CPU: int8 weights.")),
    (("--device",), dict(help="cpu | cuda | cuda:N | auto (default: the recipe's).")),
    (("--threads",), dict(type=int, help="torch CPU threads (default: the recipe's).")),
    (("--progress/--no-progress",), dict(default=None, help="Progress bar on stderr.")),
    (("--chunk-lines",), dict(type=click.IntRange(min=1), hidden=True)),  # memory tests
    (("--speaker",), dict(metavar="NAME", help="ASR: the speaker of every input.")),
    (
        ("--utt2spk",),
        dict(type=click.Path(dir_okay=False), help="ASR: Kaldi utt2spk (utt id = file stem)."),
    ),
    (("--adapt",), dict(type=click.Choice(["none", "lin"]), help="ASR, with speakers: adapt.")),
]


def _decode_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of decode, translate and transcribe."""
    for flags, kw in reversed(_DECODE_OPTIONS):
        fn = click.option(*flags, **kw)(fn)
    return _SET_OPTION(_workspace_option(fn))


def _text_lines(inputs: tuple[str, ...]):
    """Lines of the input files (``-``: stdin), without line ends; invalid UTF-8 names the
    file and line. Read lazily: memory does not grow with the input."""
    from seqpipe.data.text import decode_lines

    for name in inputs:
        label = "<stdin>" if name == "-" else name
        if name != "-" and not Path(name).is_file():
            raise InputError(f"{name}: file not found")
        f = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
        try:
            yield from decode_lines(f, label)
        finally:
            if f is not sys.stdin.buffer:
                f.close()


def _audio_paths(inputs: tuple[str, ...]):
    """Audio files given directly, or listed one per line in a text file (``-``: stdin), a
    line ``PATH`` or ``PATH<TAB>SPEAKER``: ``PATH`` or ``PATH<TAB>SPEAKER`` items."""
    for name in inputs:
        if name != "-" and Path(name).suffix.lower() in AUDIO_SUFFIXES:
            if not Path(name).is_file():
                raise InputError(f"{name}: audio file not found")
            yield name
            continue
        label = "<stdin>" if name == "-" else name
        for n, line in enumerate(_text_lines((name,)), 1):
            path = line.split("\t", 1)[0].strip()
            if path and not Path(path).is_file():
                raise InputError(
                    f"{label}:{n}: {path!r} is not an audio file (INPUT lists one audio path "
                    "a line, optionally TAB and its speaker)"
                )
            yield line


def _with_speakers(items: Any, speaker: str | None, utt2spk: str | None) -> list[str]:
    """All ASR inputs, each ``PATH<TAB>SPEAKER``: from ``--speaker``, else ``--utt2spk`` (the
    file's stem is its utterance id), else the list file's column ("" where none)."""
    table: dict[str, str] = {}
    if utt2spk:
        for n, line in enumerate(_text_lines((utt2spk,)), 1):
            parts = line.split()
            if len(parts) != 2:
                raise InputError(f"{utt2spk}:{n}: expected '<utterance id> <speaker>'")
            table[parts[0]] = parts[1]
    out = []
    for item in items:
        path, _, listed = item.partition("\t")
        path = path.strip()
        if speaker is not None:
            listed = speaker
        elif utt2spk and path:
            if Path(path).stem not in table:
                raise InputError(f"{utt2spk}: no speaker for utterance {Path(path).stem!r}")
            listed = table[Path(path).stem]
        out.append(f"{path}\t{listed.strip()}" if path else "")
    return out


def _use_model(
    model: str,
    inputs: tuple[str, ...],
    *,
    want: str | None,
    output: Path | None,
    checkpoint: str | None,
    quantize: str | None,
    device: str | None,
    threads: int | None,
    overrides: tuple[str, ...],
    progress: bool | None,
    chunk_lines: int | None,
    workspace: Path,
    speaker: str | None = None,
    utt2spk: str | None = None,
    adapt: str | None = None,
    **asked: Any,
) -> None:
    from seqpipe.common.settings import DecodeSettings
    from seqpipe.use.api import Model, resolve_model

    world, rank, device, threads = _join_ranks(device, threads)
    try:
        # what can be checked without loading torch and the model is checked first
        src = resolve_model(model, workspace, overrides)
        if want is not None and src.task != want:
            cmd = "transcribe" if src.task == "asr" else "translate"
            kind = "a speech recognition" if src.task == "asr" else "a translation"
            raise InputError(f"{model} is {kind} model: use `seqpipe {cmd}` (or `seqpipe decode`)")
        DecodeSettings.from_config(src.decode_cfg).override(**asked).check(src.task)
        for name in inputs:
            if name != "-" and not Path(name).is_file():
                raise InputError(f"{name}: file not found")
        if checkpoint is not None and checkpoint not in ("best", "last", "averaged"):
            raise InputError(f"--checkpoint {checkpoint}: use best, last or averaged")
        m = Model(src, checkpoint=checkpoint, device=device, threads=threads, quantize=quantize)
        if threads is None and m.device.type == "cpu":  # as the decode stage does
            import torch

            torch.set_num_threads(max(1, int(m.source.decode_cfg.threads)))
        s = m.decode_settings(**asked)
        if not inputs:
            if sys.stdin.isatty() and world == 1:
                _interactive(m, s)
                return
            inputs = ("-",)
        items = (
            (_text_lines(inputs) if m.task == "mt" else _audio_paths(inputs))
            if rank == 0
            else iter(())
        )
        if m.task == "asr":
            m.adapt = adapt or m.adapt
            items = list(items)
            if speaker is not None or utt2spk:
                items = _with_speakers(items, speaker, utt2spk)
            if any("\t" in item for item in items):  # speakers: one chunk, as a decode split
                chunk_lines = max(1, len(items))
        _write_results(m, s, items, output, progress, rank, chunk_lines)
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _join_ranks(device: str | None, threads: int | None) -> tuple[int, int, str | None, int | None]:
    """Under torchrun: join the process group; each rank decodes on its own GPU (or one CPU
    thread). :return: world size, rank, device, threads"""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            _init_gloo()
        if (device in (None, "auto", "cuda")) and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        threads = threads or 1
    return world, rank, device, threads


def _init_gloo() -> None:
    """``init_process_group("gloo")`` with fd 1 pointed at stderr: gloo prints its connection
    messages on stdout, which holds the decoded output."""
    import os

    import torch.distributed as dist

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        dist.init_process_group("gloo")
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _write_results(
    m: Any,
    s: Any,
    items: Any,
    output: Path | None,
    progress: bool | None,
    rank: int,
    chunk_lines: int | None = None,
) -> None:
    import os

    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    unit = " sent" if m.task == "mt" else " utt"
    bar = tqdm(unit=unit, file=sys.stderr, disable=not progress or rank != 0, dynamic_ncols=True)
    tmp = None
    if rank != 0:
        out = None
    elif output is None or str(output) == "-":
        out, output = sys.stdout.buffer, None
    elif output.exists() and not output.is_file():  # /dev/null, a FIFO: write straight in
        out = open(output, "wb")  # noqa: SIM115
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
        out = open(tmp, "wb")  # noqa: SIM115
    try:
        line = 0
        for line, hyps in enumerate(
            m.decode_stream(items, s, chunk_size=chunk_lines, on_chunk=bar.update), 1
        ):
            if out is None:
                continue
            tail = (lambda h: f"\t{h.alignment}") if s.alignment else (lambda h: "")
            if s.nbest == 1:
                out.write(f"{hyps[0].text}{tail(hyps[0])}\n".encode())
            else:
                for rank_, h in enumerate(hyps, 1):
                    out.write(f"{line}\t{rank_}\t{h.score:.4f}\t{h.text}{tail(h)}\n".encode())
        bar.close()
        if out is not None:
            out.flush()
        if tmp is not None:
            out.close()  # type: ignore[union-attr]
            os.replace(tmp, output)  # type: ignore[arg-type]
            tmp = None
        elif output is not None and out is not None:
            out.close()
        if rank == 0 and output is not None:
            click.echo(f"{line} {'sentences' if m.task == 'mt' else 'files'} → {output}", err=True)
    finally:
        if tmp is not None:
            out.close()  # type: ignore[union-attr]
            tmp.unlink(missing_ok=True)


def _interactive(m: Any, s: Any) -> None:
    what = "a sentence" if m.task == "mt" else "the path of an audio file"
    click.echo(f"{m.source.description}: type {what} and press Enter (Ctrl-D to quit)", err=True)
    try:
        import readline  # noqa: F401 - line editing for input()
    except ImportError:  # pragma: no cover
        pass
    while True:
        try:
            if sys.stdout.isatty():
                text = input("> ")
            else:  # keep stdout for the output: prompt on stderr
                sys.stderr.write("> ")
                sys.stderr.flush()
                text = sys.stdin.readline()
                if not text:
                    raise EOFError
        except EOFError:
            click.echo("", err=True)
            return
        if not text.strip():
            continue
        try:
            hyps = m.decode_chunk([text], s)[0]
        except InputError as exc:  # e.g. a missing audio file: say so and keep going
            click.echo(f"error: {exc}", err=True)
            continue
        if s.nbest == 1:
            click.echo(hyps[0].text)
        else:
            for rank, h in enumerate(hyps, 1):
                click.echo(f"{rank}\t{h.score:.4f}\t{h.text}")


_USE_HELP = """MODEL: an experiment folder (exp/mt_small; --set decode.KEY=VALUE overrides), a
recipe (its artifacts are looked up in the workspace cache; --set KEY=VALUE for overrides), a
train artifact or a file written by `seqpipe export`. INPUT: {what}; `-` or nothing reads
stdin (an interactive prompt when stdin is a terminal). Output: one line per input, in input
order."""


@main.command()
@click.argument("model")
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@_decode_options
@handle_errors
def decode(model: str, inputs: tuple[str, ...], **kw: Any) -> None:
    """Translate text or transcribe audio with a trained MODEL.

    MT: INPUT files hold one sentence a line (normalised as in the prepare stage; an empty
    line gives an empty line). ASR: INPUT are audio files, or text files listing one audio
    path a line. Under `torchrun --nproc_per_node=N -m seqpipe decode ...` the input is
    sharded across the processes and rank 0 writes the output in input order."""
    _use_model(model, inputs, want=None, **kw)


@main.command()
@click.argument("model")
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@_decode_options
@handle_errors
def translate(model: str, inputs: tuple[str, ...], **kw: Any) -> None:
    """Translate sentences with a trained MT MODEL (as `seqpipe decode`)."""
    _use_model(model, inputs, want="mt", **kw)


@main.command()
@click.argument("model")
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@_decode_options
@handle_errors
def transcribe(model: str, inputs: tuple[str, ...], **kw: Any) -> None:
    """Transcribe audio files with a trained ASR MODEL (as `seqpipe decode`)."""
    _use_model(model, inputs, want="asr", **kw)


def _add_use_help(cmd: click.Command, what: str) -> None:
    import inspect

    cmd.help = inspect.cleandoc(cmd.help or "") + "\n\n" + _USE_HELP.format(what=what)


_add_use_help(decode, "text files (MT) or audio files (ASR)")
_add_use_help(translate, "text files, one sentence a line")
_add_use_help(transcribe, "audio files, or text files listing one audio path a line")


@main.command()
@click.argument("model")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The model file to write (e.g. model.spt).",
)
@click.option("--checkpoint", type=_CHECKPOINTS, help="Which weights (default: the recipe's).")
@_SET_OPTION
@_workspace_option
@handle_errors
def export(
    model: str, output: Path, checkpoint: str | None, overrides: tuple[str, ...], workspace: Path
) -> None:
    """Write MODEL (experiment folder, recipe or train artifact) as one self-contained file:
    weights, model spec, tokenizer, recipe and versions. `torch.load(FILE, weights_only=True)`
    reads it; `seqpipe decode FILE ...` and `load_model(FILE)` use it without the cache."""
    from seqpipe.use.api import resolve_model
    from seqpipe.use.export import export_model

    src = resolve_model(model, workspace, overrides)
    out = export_model(src, output, checkpoint)
    click.echo(
        f"{src.task} model ({checkpoint or src.decode_cfg.checkpoint} checkpoint) → {out} "
        f"({_human_bytes(out.stat().st_size)})",
        err=True,
    )


# ---------------------------------------------------------------------------------- comparing runs
@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(["mt", "asr"]), help="Only this task's runs.")
@click.option("--test-set", help="Only this test set (split name, e.g. test).")
@click.option(
    "--sort",
    "sort_by",
    metavar="METRIC",
    help="bleu | chrf | wer | cer | params | steps | train_seconds | decode_speed | date "
    "| run (default: bleu, or wer without MT runs); best first.",
)
@_format_option
@click.option("--color/--no-color", default=None, help="Bold best values (default: on a terminal).")
@click.option(
    "--baseline",
    metavar="RUN",
    help="Add a column p: each row's paired-bootstrap p-value against RUN (BLEU; ASR: WER).",
)
@_workspace_option
@handle_errors
def leaderboard(
    paths: tuple[Path, ...],
    task: str | None,
    test_set: str | None,
    sort_by: str | None,
    fmt: str,
    color: bool | None,
    baseline: str | None,
    workspace: Path,
) -> None:
    """One row per scored (run, test set) under PATHS (workspaces, experiment folders or score
    artifacts; default: the workspace): model, scores with their signature, decode settings,
    training time and steps, decode speed, date and code version."""
    from seqpipe.tools.leaderboard import collect, render, select

    rows = select(collect(list(paths) or [workspace]), task=task, test_set=test_set, sort=sort_by)
    extra: tuple[str, ...] = ()
    if baseline:
        from seqpipe.tools.compare import add_baseline_column

        add_baseline_column(rows, baseline)
        extra = ("p",)
    click.echo(render(rows, fmt, color=color, extra_columns=extra), nl=False, color=color)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--test-set", default="test", show_default=True, help="The split to compare on.")
@click.option("--samples", default=1000, show_default=True, help="Bootstrap resamples.")
@click.option(
    "--trials", default=10000, show_default=True, help="Approximate randomization trials (MT)."
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def compare(runs: tuple[Path, ...], test_set: str, samples: int, trials: int, fmt: str) -> None:
    """Is a run better than another beyond noise? RUNS (experiment folders or score artifacts)
    against the first on a shared test set: each metric's difference, its 95% confidence
    interval and p-values (MT: sacrebleu's paired bootstrap and approximate randomization;
    ASR: paired bootstrap over utterances). Runs with other references are refused."""
    import json

    from seqpipe.tools.compare import compare_paths, render

    rows = compare_paths(runs, test_set, samples=samples, trials=trials)
    out = json.dumps(rows, indent=2) + "\n" if fmt == "json" else render(rows, test_set)
    click.echo(out, nl=False)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option(
    "--grid",
    "grids",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="Values of one key (repeatable; the sweep runs every combination). With "
    "--random, KEY=A:B is a range.",
)
@click.option(
    "--random",
    "random_n",
    type=int,
    metavar="N",
    help="Random search: N draws from the --grid values and ranges.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the random draws.")
@click.option("--dry-run", is_flag=True, help="List the variants; run nothing.")
@click.option("--sort", "sort_by", metavar="METRIC", help="Leaderboard order (as `leaderboard`).")
@_format_option
@click.option("--wait", is_flag=True, help="Wait for an artifact another run is building.")
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Variants at once on this machine (a local Ray; threads divided among them).",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[ADDRESS]",
    help="Run each variant as a task on the Ray cluster at ADDRESS (default: auto).",
)
@click.option(
    "--cpus-per-trial", type=click.IntRange(min=1), help="CPUs and torch threads a variant."
)
@click.option("--gpus-per-trial", default=0.0, type=float, help="GPUs a variant (Ray).")
@click.option(
    "--asha",
    is_flag=True,
    help="Ray Tune's ASHA scheduler stops the weakest variants at their validations.",
)
@_workspace_option
@handle_errors
def sweep(
    recipe: str,
    overrides: tuple[str, ...],
    grids: tuple[str, ...],
    random_n: int | None,
    seed: int,
    dry_run: bool,
    sort_by: str | None,
    fmt: str,
    wait: bool,
    jobs: int,
    ray_address: str | None,
    cpus_per_trial: int | None,
    gpus_per_trial: float,
    asha: bool,
    workspace: Path,
) -> None:
    """Run variants of RECIPE (grid or random search) through the shared cache, then print
    their leaderboard. Each variant runs as exp/<name>-<hash of its overrides>.

    \b
    seqpipe sweep recipes/mt_small.yaml --grid model.hidden_size=256,512 --grid train.lr=1e-3,5e-4
    seqpipe sweep recipes/mt_small.yaml --random 8 --grid train.lr=1e-4:1e-3 --grid model.cell=gru,lstm
    """
    from seqpipe.tools.leaderboard import render, select
    from seqpipe.tools.sweep import leaderboard_rows, plan, run_sweep, stopped_rows

    debug = bool(click.get_current_context().find_root().params.get("debug"))
    variants = plan(recipe, list(overrides), list(grids), random_n, seed)
    if dry_run:
        for v in variants:
            click.echo(f"{v.name}\t{v.label()}")
        return
    t0 = time.perf_counter()
    say = lambda msg: click.echo(msg, err=True)  # noqa: E731
    if jobs > 1 or ray_address or asha:
        from seqpipe.tools.sweep import run_sweep_ray

        cpus = cpus_per_trial or max(1, (os.cpu_count() or 1) // jobs)
        run_sweep_ray(
            recipe,
            list(overrides),
            variants,
            workspace,
            address=ray_address,
            jobs=jobs,
            cpus_per_trial=cpus,
            gpus_per_trial=gpus_per_trial,
            asha=asha,
            debug=debug,
            log=say,
        )
    else:
        run_sweep(recipe, list(overrides), variants, workspace, wait=wait, debug=debug, log=say)
    failed = [v for v in variants if v.error]
    stopped = sum(v.stopped_at is not None for v in variants)
    click.echo(
        f"sweep: {len(variants) - len(failed) - stopped} of {len(variants)} variants done"
        + (f", {stopped} stopped early" if stopped else "")
        + f" in {time.perf_counter() - t0:.1f} s",
        err=True,
    )
    rows = select(leaderboard_rows(variants, workspace), sort=sort_by)
    rows += stopped_rows(variants, _load(recipe, overrides).task)
    extra = ("overrides", "status") if stopped else ("overrides",)
    click.echo(render(rows, fmt, extra_columns=extra), nl=False)
    if failed:
        for v in failed:
            click.echo(f"error: {v.name} ({v.label()}): {v.error}", err=True)
        sys.exit(1)


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for report.md and its figures (default: RUN/report).",
)
@click.option("--worst", default=10, show_default=True, help="How many worst examples to list.")
@handle_errors
def report(run: Path, output: Path | None, worst: int) -> None:
    """Markdown report of a scored RUN (experiment folder): scores and settings, learning
    curve, BLEU by source length, the worst sentences (ASR: the error report)."""
    from seqpipe.tools.report import write_report

    md = write_report(run, output, worst)
    click.echo(str(md))


if __name__ == "__main__":  # pragma: no cover
    main()
