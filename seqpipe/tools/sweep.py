"""``seqpipe sweep``: run variants of a recipe through the same cache, then rank them.

Grid search: every combination of the ``--grid KEY=V1,V2,...`` values. Random search
(``--random N``): N draws where ``KEY=A:B`` is a range (integers: uniform; positive floats:
log-uniform; other floats: uniform) and ``KEY=V1,V2`` a choice; ``--seed`` fixes the draws.

Each variant is the base recipe plus its overrides and ``name=<recipe name>-<6 hex of a hash of
its overrides>``, so it gets its own ``exp/`` folder while stages whose keys do not change
(prepare and tokenize when only ``train.*`` varies; train when only ``decode.*`` varies) are run
once and shared through the cache. With ``--jobs N`` (a local Ray) or ``--ray ADDRESS`` (a
Ray cluster) the variants run as Ray tasks at the same time; the per-artifact locks let the
first variant that needs a shared stage build it while the others wait for it.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqpipe.core.pipeline import Pipeline
from seqpipe.core.recipe import load_recipe
from seqpipe.core.schema import hash_obj
from seqpipe.errors import InputError, SeqpipeError
from seqpipe.tools.leaderboard import collect


@dataclass
class Variant:
    name: str
    overrides: dict[str, str]  # key -> value as typed (YAML scalar text)
    score_key: str | None = None
    error: str | None = None
    ran: list[str] | None = field(default_factory=list)  # None: not known (--asha)
    stopped_at: int | None = None  # the step at which ASHA stopped it (sweep --asha)

    def override_args(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.overrides.items()]

    def label(self) -> str:
        return " ".join(self.override_args())


def _split_values(text: str) -> list[str]:
    """``a,b,[c,d]`` -> ``["a", "b", "[c,d]"]`` (commas inside brackets/quotes stay)."""
    out, depth, cur, quote = [], 0, "", ""
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    out.append(cur.strip())
    return out


def parse_grid(specs: list[str]) -> list[tuple[str, str]]:
    """``KEY=VALUES`` -> (key, values text); a key given twice is an error."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        key, eq, values = spec.partition("=")
        key = key.strip()
        if not eq or not key or not values.strip():
            raise InputError(f"--grid {spec}: expected KEY=V1,V2,... (or KEY=A:B with --random)")
        if key == "name":
            raise InputError("--grid name=...: sweep variants are named automatically")
        if any(k == key for k, _ in out):
            raise InputError(f"--grid {key}: given twice")
        out.append((key, values.strip()))
    return out


def _is_range(values: str) -> bool:
    if values.count(":") != 1 or "," in values:
        return False
    a, b = values.split(":")
    try:
        float(a)
        float(b)
    except ValueError:
        return False
    return True


def _fmt_number(x: float) -> str:
    return f"{x:.4g}"


def _draw(values: str, rng: random.Random) -> str:
    if _is_range(values):
        a_s, b_s = values.split(":")
        if _int_like(a_s) and _int_like(b_s):
            lo, hi = sorted((int(a_s), int(b_s)))
            return str(rng.randint(lo, hi))
        lo, hi = sorted((float(a_s), float(b_s)))
        if lo > 0:
            return _fmt_number(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return _fmt_number(rng.uniform(lo, hi))
    return rng.choice(_split_values(values))


def _int_like(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def variant_name(base: str, overrides: dict[str, str]) -> str:
    return f"{base}-{hash_obj(sorted(overrides.items()), n=6)}"


def make_variants(
    base_name: str, grid: list[tuple[str, str]], random_n: int | None = None, seed: int = 0
) -> list[Variant]:
    """The sweep's variants, in order (duplicates from random draws are dropped)."""
    if not grid:
        raise InputError("sweep: give at least one --grid KEY=V1,V2,...")
    combos: list[dict[str, str]] = []
    if random_n is None:
        for key, values in grid:
            if _is_range(values):
                raise InputError(f"--grid {key}={values}: a range needs --random N")
        lists = [[(k, v) for v in _split_values(values)] for k, values in grid]
        combos = [dict(c) for c in itertools.product(*lists)]
    else:
        if random_n < 1:
            raise InputError(f"--random {random_n}: must be at least 1")
        rng = random.Random(seed)
        for _ in range(random_n):
            combos.append({k: _draw(values, rng) for k, values in grid})
    out, seen = [], set()
    for c in combos:
        name = variant_name(base_name, c)
        if name in seen:
            continue
        seen.add(name)
        out.append(Variant(name, c))
    return out


def plan(
    recipe: str | Path,
    base_overrides: list[str],
    grid_specs: list[str],
    random_n: int | None = None,
    seed: int = 0,
) -> list[Variant]:
    """Variants of ``recipe``, each checked by loading its recipe (bad keys fail here, before
    anything runs)."""
    base_name = load_recipe(recipe, base_overrides).name
    grid = parse_grid(grid_specs)
    variants = make_variants(base_name, grid, random_n, seed)
    for v in variants:
        load_recipe(recipe, [*base_overrides, *v.override_args(), f"name={v.name}"])
    return variants


def run_sweep(
    recipe: str | Path,
    base_overrides: list[str],
    variants: list[Variant],
    workspace: Path | str = ".",
    *,
    wait: bool = False,
    debug: bool = False,
    log: Any = None,
) -> list[Variant]:
    """Run every variant's stages (cached ones are skipped). A variant whose stage fails is
    recorded (``variant.error``) and the sweep goes on."""
    for i, v in enumerate(variants, 1):
        r = load_recipe(recipe, [*base_overrides, *v.override_args(), f"name={v.name}"])
        pipe = Pipeline(r, workspace, debug=debug)
        if log is not None:
            log(f"[{i}/{len(variants)}] {v.name}: {v.label()}")
        try:
            done = pipe.run(wait=wait)
        except InputError:
            raise
        except SeqpipeError as exc:
            if debug:
                raise
            v.error = str(exc)
            if log is not None:
                log(f"[{i}/{len(variants)}] {v.name} failed: {exc}")
            continue
        v.ran = list(pipe.ran)
        if "score" in done:
            v.score_key = done["score"].key
    return variants


def _run_variant(
    recipe: str, overrides: list[str], workspace: str, debug: bool
) -> tuple[str | None, list[str], str | None]:
    """One variant in a Ray worker: (score key, stages run, error). Variants that need the same
    upstream artifact wait for whichever builds it first (per-artifact locks). Its log goes
    to ``exp/<name>/log.txt``."""
    logger = logging.getLogger("seqpipe")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    pipe = Pipeline(load_recipe(recipe, overrides), workspace, debug=debug)
    try:
        done = pipe.run(wait=True)
    except SeqpipeError as exc:
        return None, list(pipe.ran), str(exc)
    return (done["score"].key if "score" in done else None), list(pipe.ran), None


def _ray(address: str | None, jobs: int, cpus_per_trial: int) -> Any:
    """Ray, connected to the cluster at ``address`` or to a local Ray sized for ``jobs``
    trials at once."""
    try:
        import ray
    except ImportError:
        raise InputError("--jobs/--ray run variants on Ray: pip install 'seqpipe[ray]'") from None
    env = {k: v for k, v in os.environ.items() if k.startswith("SEQPIPE_") or k == "PYTHONPATH"}
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
    else:
        ray.init(  # a Ray of its own, even where this machine belongs to a cluster
            address="local",
            num_cpus=jobs * cpus_per_trial,
            include_dashboard=False,
            log_to_driver=False,
        )
    return ray


def run_sweep_ray(
    recipe: str | Path,
    base_overrides: list[str],
    variants: list[Variant],
    workspace: Path | str = ".",
    *,
    address: str | None = None,
    jobs: int = 2,
    cpus_per_trial: int = 1,
    gpus_per_trial: float = 0,
    asha: bool = False,
    debug: bool = False,
    log: Any = None,
) -> list[Variant]:
    """Run the variants as Ray tasks (``cpus_per_trial`` CPUs and torch threads,
    ``gpus_per_trial`` GPUs each): on a local Ray with ``jobs`` trials at once, or on the
    cluster at ``address`` (``auto``: the one this machine belongs to) with the workspace on a
    filesystem every node sees. ``asha``: as Ray Tune trials under the ASHA scheduler, which
    stops the weakest early (``variant.stopped_at``)."""
    threads = [f"{s}.threads={cpus_per_trial}" for s in ("train", "decode")]
    args = {
        v.name: [*base_overrides, *threads, *v.override_args(), f"name={v.name}"] for v in variants
    }
    recipe, workspace = str(Path(recipe).resolve()), str(Path(workspace).resolve())
    ray = _ray(address, jobs, cpus_per_trial)
    try:
        if asha:
            _run_tune(recipe, args, variants, workspace, cpus_per_trial, gpus_per_trial, debug)
        else:
            task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial)(_run_variant)
            pending = {task.remote(recipe, args[v.name], workspace, debug): v for v in variants}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                v = pending.pop(ready[0])
                v.score_key, v.ran, v.error = ray.get(ready[0])
                _log_end(v, variants, log)
    finally:
        ray.shutdown()
    if asha:
        for v in variants:
            _log_end(v, variants, log)
    return variants


def _log_end(v: Variant, variants: list[Variant], log: Any) -> None:
    if log is None:
        return
    if v.error:
        what = f"failed: {v.error}"
    elif v.stopped_at is not None:
        what = f"stopped at step {v.stopped_at} by ASHA"
    else:
        what = "done" if v.ran is None else f"done (ran {', '.join(v.ran) or 'nothing'})"
    log(f"[{variants.index(v) + 1}/{len(variants)}] {v.name}: {v.label()}: {what}")


def _tune_trial(config: dict[str, Any]) -> None:
    """One variant as a Ray Tune trial: every validation score before its last step goes to the
    scheduler, which may end the trial there (the train stage's checkpoint stays in its
    ``.partial`` folder); the last step's is not reported, so a run that reaches it finishes
    even when ``train.max_steps`` is one of ASHA's rungs."""
    from ray import tune

    from seqpipe.common import trainer

    variant = config["variant"]
    reported: list[int] = []

    def report(step: int, score: float) -> None:
        if step >= variant["max_steps"]:
            return
        reported.append(step)
        tune.report({"step": step, "score": score})

    trainer.validation_hooks.append(report)
    try:
        _, _, error = _run_variant(
            config["recipe"], variant["overrides"], config["workspace"], config["debug"]
        )
    except SystemExit:  # how Tune ends a trial its scheduler stops
        logging.getLogger("seqpipe").info(
            "sweep    stopped by ASHA at step %d; `seqpipe run` with this recipe resumes it",
            reported[-1] if reported else 0,
        )
        raise
    if error:
        raise RuntimeError(f"seqpipe: {error}")


def _run_tune(
    recipe: str,
    args: dict[str, list[str]],
    variants: list[Variant],
    workspace: str,
    cpus: int,
    gpus: float,
    debug: bool,
) -> None:
    """ASHA over the variants' validation scores (rungs in training steps: the first at
    ``train.valid_every``, Ray's reduction factor 4, never at or past ``train.max_steps``)."""
    import tempfile

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    try:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
    except ImportError:
        raise InputError("--asha needs Ray Tune: pip install 'seqpipe[ray]'") from None
    from seqpipe.common.trainer import higher_is_better

    train = [load_recipe(recipe, a).train for a in args.values()]
    if any(t.max_steps is None for t in train):
        raise InputError("--asha: set train.max_steps (ASHA's rungs are counted in steps)")
    scheduler = ASHAScheduler(
        time_attr="step",
        metric="score",
        mode="max" if higher_is_better(train[0].valid_metric) else "min",
        max_t=max(t.max_steps for t in train) + 1,  # ASHA stops a trial that reaches max_t
        grace_period=min(t.valid_every for t in train),
    )
    grid = [
        {"name": n, "overrides": a, "max_steps": t.max_steps}
        for (n, a), t in zip(args.items(), train, strict=True)
    ]
    space = {
        "variant": tune.grid_search(grid),
        "recipe": recipe,
        "workspace": workspace,
        "debug": debug,
    }
    with tempfile.TemporaryDirectory(prefix="seqpipe-tune-") as store:
        tuner = tune.Tuner(
            tune.with_resources(_tune_trial, {"cpu": cpus, "gpu": gpus}),
            param_space=space,
            tune_config=tune.TuneConfig(scheduler=scheduler),
            run_config=tune.RunConfig(storage_path=store, name="sweep", verbose=0),
        )
        results = {r.config["variant"]["name"]: r for r in tuner.fit()}
    for v in variants:
        res = results[v.name]
        pipe = Pipeline(load_recipe(recipe, args[v.name]), workspace)
        if res.error is not None:
            v.error = str(res.error).strip().splitlines()[-1].partition("seqpipe: ")[2] or str(
                res.error
            )
        elif pipe.state("score") == "done":
            v.score_key, v.ran = pipe.keys()["score"], None
        else:
            v.stopped_at = (res.metrics or {}).get("step")


def leaderboard_rows(variants: list[Variant], workspace: Path | str) -> list[dict[str, Any]]:
    """Leaderboard rows of the sweep's runs, with their overrides and names."""
    by_key: dict[str, list[Variant]] = {}
    for v in variants:
        if v.score_key:
            by_key.setdefault(v.score_key, []).append(v)
    if not by_key:
        return []
    rows = []
    for row in collect([workspace], score_keys=by_key):
        for v in by_key.get(row["score_key"], []):
            rows.append(dict(row, run=v.name, overrides=v.label()))
    return rows


def stopped_rows(variants: list[Variant], task: str) -> list[dict[str, Any]]:
    """Leaderboard rows of the variants ASHA stopped (no scores: their training did not end;
    ``seqpipe run`` with their overrides resumes them)."""
    return [
        {"run": v.name, "task": task, "overrides": v.label(), "steps": v.stopped_at}
        | {"status": f"stopped at step {v.stopped_at}"}
        for v in variants
        if v.stopped_at is not None
    ]
