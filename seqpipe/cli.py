"""The ``seqpipe`` command. Thin: parse, call, print.

Exit codes: 0 ok, 2 bad input (recipe, files, data), 1 a failure inside a stage.
``--debug`` shows tracebacks.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .errors import SeqpipeError

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
            click.echo(f"error: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.option("-v", "--verbose", is_flag=True, help="More log output.")
@click.version_option(package_name="seqpipe")
def main(debug: bool, verbose: bool) -> None:
    """seqpipe: staged, cached sequence-to-sequence experiments (MT and ASR)."""
    from .runtime import tune_allocator

    tune_allocator()
    _setup_logging(verbose)


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
    from .recipe import load_recipe

    return load_recipe(recipe, list(overrides))


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--from", "start", metavar="STAGE", help=f"Start at this stage ({STAGE_HELP}).")
@click.option("--to", "stop", metavar="STAGE", help="Stop after this stage.")
@click.option("--only", metavar="STAGE", help="Run just this stage (its inputs must exist).")
@click.option("--force", multiple=True, metavar="STAGE", help="Rerun STAGE even if cached.")
@click.option("--wait", is_flag=True, help="Wait for another run's workspace lock.")
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
    workspace: Path,
) -> None:
    """Run RECIPE's stages, skipping what is cached. OVERRIDES: key=value (train.lr=5e-4)."""
    from .pipeline import Pipeline

    t0 = time.perf_counter()
    r = _load(recipe, overrides)
    pipe = Pipeline(r, workspace, debug=bool(click.get_current_context().find_root().params["debug"]))
    done = pipe.run(only=only, start=start, stop=stop, force=force, wait=wait)
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
@_workspace_option
@handle_errors
def status(recipe: str, overrides: tuple[str, ...], workspace: Path) -> None:
    """Show every stage of RECIPE: key, state (done/partial/stale/missing), size, time."""
    from .pipeline import Pipeline

    pipe = Pipeline(_load(recipe, overrides), workspace)
    rows = pipe.status_rows()
    click.echo(f"{'stage':<9} {'key':<17} {'state':<8} {'size':>9} {'wall':>9}")
    for row in rows:
        size = _human_bytes(row["bytes"]) if row["bytes"] is not None else "-"
        wall = f"{row['wall_s']:.1f} s" if row["wall_s"] is not None else "-"
        click.echo(f"{row['stage']:<9} {row['key']:<17} {row['state']:<8} {size:>9} {wall:>9}")


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
    from .recipe import dump_recipe

    click.echo(dump_recipe(_load(recipe, overrides)), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
