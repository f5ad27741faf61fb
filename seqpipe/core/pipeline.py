"""The stage graph: keys, selection, running, status.

Each task declares its stages (:meth:`Recipe.stage_graph`, :class:`~seqpipe.core.stage.StageSpec`)
with what each reads of the recipe and its upstream stages. A stage's key is
``hash(stage name, stage version, what it reads, upstream keys)`` — all computable from the
recipe alone, so ``status`` and a fully cached ``run`` never import torch and finish in well
under a second. A stage's module is imported by name only when it runs.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from seqpipe.core.cache import (
    Artifact,
    ArtifactStore,
    git_commit,
    library_versions,
    write_json_atomic,
)
from seqpipe.core.recipe import Recipe, dump_recipe
from seqpipe.core.schema import hash_obj
from seqpipe.core.stage import StageContext, StageSpec
from seqpipe.errors import InputError, SeqpipeError, StageError

log = logging.getLogger("seqpipe")


def _section(recipe: Recipe, name: str) -> Any:
    value: Any = recipe
    for part in name.split("."):
        value = getattr(value, part)
    return value.key_dict() if hasattr(value, "key_dict") else value


class Pipeline:
    def __init__(self, recipe: Recipe, workspace: Path | str = ".", debug: bool = False):
        self.recipe = recipe
        self.workspace = Path(workspace).resolve()
        self.store = ArtifactStore(self.workspace)
        self.stages = recipe.stage_graph()
        self.by_name = {s.name: s for s in self.stages}
        self.exp_dir = self.workspace / "exp" / recipe.name
        self.debug = debug
        self._keys: dict[str, str] | None = None
        self.ran: list[str] = []  # stages run by the last run()
        self._wait = False  # run(wait=...): wait for another process building an artifact

    # ---------------------------------------------------------------- keys and status
    def key_material(self, spec: StageSpec, keys: dict[str, str]) -> dict[str, Any]:
        material: dict[str, Any] = {
            "stage": spec.name,
            "version": spec.version,
            "config": {s: _section(self.recipe, s) for s in spec.sections},
            "inputs": {i: keys[i] for i in spec.inputs},
        }
        if spec.extra_key is not None:
            material["extra"] = spec.extra_key(self.recipe)
        return material

    def keys(self) -> dict[str, str]:
        if self._keys is None:
            keys: dict[str, str] = {}
            for spec in self.stages:
                keys[spec.name] = hash_obj(self.key_material(spec, keys))
            self._keys = keys
        return self._keys

    def state(self, name: str, verify: bool = False) -> str:
        """done | corrupt | running | partial | stale | missing. A finished artifact is
        corrupt when a file is missing or of another size than its manifest says (``verify``:
        or of another sha256); running: another process holds its lock."""
        key = self.keys()[name]
        art = self.store.get(name, key)
        if art is not None:
            return "corrupt" if art.problem(full=verify) else "done"
        if self.store.builder(name, key) is not None:
            return "running"
        if self.store.partial_dir(name, key).exists():
            return "partial"
        link = self.exp_dir / name
        if link.is_symlink() or link.exists():
            return "stale"
        return "missing"

    def status_rows(self, verify: bool = False) -> list[dict[str, Any]]:
        rows = []
        for spec in self.stages:
            key = self.keys()[spec.name]
            state = self.state(spec.name, verify)
            size = wall = None
            if state in ("done", "corrupt"):
                art = self.store.get(spec.name, key)
                assert art is not None
                m = art.manifest()
                size = sum(f["bytes"] for f in m.get("files", {}).values())
                wall = m.get("wall_time_s")
            elif (
                state in ("partial", "running") and self.store.partial_dir(spec.name, key).exists()
            ):
                size = self.store.size(self.store.partial_dir(spec.name, key))
            row = {"stage": spec.name, "key": key, "state": state, "bytes": size, "wall_s": wall}
            if state == "running":
                row["builder"] = self.store.builder(spec.name, key)
            rows.append(row)
        return rows

    # ---------------------------------------------------------------- selection
    def select(
        self,
        only: str | None = None,
        start: str | None = None,
        stop: str | None = None,
    ) -> list[StageSpec]:
        names = [s.name for s in self.stages]
        for opt, value in (("--only", only), ("--from", start), ("--to", stop)):
            if value is not None and value not in names:
                raise InputError(f"{opt} {value}: unknown stage; stages are {', '.join(names)}")
        if only:
            return [self.by_name[only]]
        i = names.index(start) if start else 0
        j = names.index(stop) + 1 if stop else len(names)
        if i >= j:
            raise InputError(f"--from {start} comes after --to {stop}")
        return self.stages[i:j]

    # ---------------------------------------------------------------- running
    def run(
        self,
        only: str | None = None,
        start: str | None = None,
        stop: str | None = None,
        force: tuple[str, ...] = (),
        wait: bool = False,
        verify: bool = False,
    ) -> dict[str, Artifact]:
        """Run the selected stages that have no usable artifact. Cached artifacts are checked
        against their manifests (file sizes; ``verify``: sha256 too), and the inputs of a stage
        that runs always by sha256: a corrupt artifact is set aside and rebuilt."""
        selected = self.select(only, start, stop)
        for f in force:
            if f not in self.by_name:
                raise InputError(
                    f"--force {f}: unknown stage; stages are {', '.join(self.by_name)}"
                )
        keys = self.keys()
        cached = {  # (a corrupt artifact is set aside here, and rebuilt below)
            s.name: a
            for s in selected
            if s.name not in force
            and (a := self.store.usable(s.name, keys[s.name], verify)) is not None
        }
        if len(cached) == len(selected):
            self._link_exp(cached, write_log=False)
            return cached
        done: dict[str, Artifact] = {}
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and rank > 0:
            return self._run_follower(selected)
        self._wait = wait
        self._setup_exp()
        for spec in selected:
            key = keys[spec.name]
            art = cached.get(spec.name)
            if art is not None:
                log.info("%-8s cached   %s", spec.name, key)
                done[spec.name] = art
                self._link_exp({spec.name: art})
                continue
            self._build(spec, done, rebuild=spec.name in force)
        return done

    def _build(self, spec: StageSpec, done: dict[str, Artifact], rebuild: bool = True) -> Artifact:
        """Build ``spec``'s artifact under its lock; a run that waited for another process
        building it uses that one instead (unless ``rebuild``)."""
        key = self.keys()[spec.name]
        with self.store.building(spec.name, key, wait=self._wait):
            art = None if rebuild else self.store.usable(spec.name, key)
            if art is not None:
                log.info("%-8s cached   %s (built by another run)", spec.name, key)
            else:
                art = self._run_stage(spec, key, self._inputs(spec, done))
                self.ran.append(spec.name)
        done[spec.name] = art
        self._link_exp({spec.name: art})
        return art

    def _inputs(self, spec: StageSpec, done: dict[str, Artifact]) -> dict[str, Artifact]:
        """The artifacts ``spec`` reads, each checked by sha256 first (a corrupt one is set
        aside and rebuilt now)."""
        keys = self.keys()
        inputs = {i: done.get(i) or self.store.get(i, keys[i]) for i in spec.inputs}
        for i, art in inputs.items():
            why = art.problem(full=True) if art is not None else None
            if art is not None and why is not None:
                self.store.set_aside(art, why)
                log.info("%-8s rebuilding %s (an input of %s)", i, keys[i], spec.name)
                inputs[i] = self._build(self.by_name[i], done)
        missing = [i for i, a in inputs.items() if a is None]
        if missing:
            upstream, todo = set(), list(spec.inputs)
            while todo:  # every stage this one needs, directly or not
                upstream.add(name := todo.pop())
                todo.extend(self.by_name[name].inputs)
            last = [s.name for s in self.stages if s.name in upstream][-1]
            cmd = ["seqpipe", "run", self._recipe_arg(), *self.recipe._overrides]
            cmd += ["-w", os.path.relpath(self.workspace), "--to", last]
            what = f"stages {' and '.join(missing)}" if len(missing) > 1 else f"stage {missing[0]}"
            raise InputError(
                f"stage {spec.name} needs the output of {what}, not run for this recipe yet: "
                f"run `{shlex.join(cmd)}` first"
            )
        return inputs  # type: ignore[return-value]

    def _run_follower(self, selected: list[StageSpec]) -> dict[str, Artifact]:
        """A non-zero rank under torchrun: waits for rank 0's artifacts, joins the (data-
        parallel) train stage without committing it, and stops after training."""
        keys = self.keys()
        done: dict[str, Artifact] = {}
        log.setLevel(logging.WARNING)  # rank 0 reports
        for spec in selected:
            if spec.name == "train":
                out = self.store.partial_dir(spec.name, keys[spec.name])
                out.mkdir(parents=True, exist_ok=True)
                ctx = StageContext(
                    self.recipe,
                    spec,
                    keys[spec.name],
                    out,
                    self._inputs(spec, done),
                    self.workspace,
                    self.exp_dir,
                    debug=self.debug,
                )
                spec.runner()(ctx)
                return done
            # rank 0 runs it; torchrun ends this process if rank 0 fails
            while (art := self.store.get(spec.name, keys[spec.name])) is None:
                time.sleep(0.5)
            done[spec.name] = art
        return done

    def _recipe_arg(self) -> str:
        p = self.recipe.path
        if p is None:
            return "RECIPE"
        try:
            return os.path.relpath(p)
        except ValueError:
            return str(p)

    def _run_stage(self, spec: StageSpec, key: str, inputs: dict[str, Artifact]) -> Artifact:
        art = self.store.finish(spec.name, key)
        if art is not None:  # killed between writing its manifest and the rename
            log.info("%-8s done     %s (an interrupted commit finished)", spec.name, key)
            return art
        out = self.store.begin(spec.name, key, keep_partial=spec.resumable)
        resumed = any(out.iterdir())
        if spec.resumable:  # exp/<name>/<stage> shows the running stage (live TensorBoard)
            self._link_exp({spec.name: Artifact(spec.name, key, out)})
        log.info("%-8s running  %s%s", spec.name, key, " (resuming)" if resumed else "")
        ctx = StageContext(
            recipe=self.recipe,
            stage=spec,
            key=key,
            out=out,
            inputs=inputs,
            workspace=self.workspace,
            exp_dir=self.exp_dir,
            debug=self.debug,
        )
        t0 = time.time()
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            extra = spec.runner()(ctx) or {}
        except SeqpipeError:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a bug or a library failure inside the stage
            raise StageError(f"stage {spec.name} failed: {type(exc).__name__}: {exc}") from exc
        wall = time.time() - t0
        manifest = {
            "recipe": self.recipe.name,
            "task": self.recipe.task,
            "config": self.key_material(spec, self.keys())["config"],
            "inputs": {k: a.key for k, a in inputs.items()},
            "versions": library_versions(),
            "git_commit": git_commit(),
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_time_s": round(wall, 3),
            **extra,
        }
        art = self.store.commit(spec.name, key, manifest, spec.scratch)
        log.info("%-8s done     %s in %.1f s", spec.name, key, wall)
        return art

    # ---------------------------------------------------------------- exp/<name>/
    def _setup_exp(self) -> None:
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        (self.exp_dir / "recipe.yaml").write_text(dump_recipe(self.recipe), encoding="utf-8")
        attach_log_file(self.exp_dir / "log.txt")

    def _link_exp(self, arts: dict[str, Artifact], write_log: bool = True) -> None:
        # the recipe beside the links is always the one they were made with (a cached run
        # with other decode settings must not leave the previous run's recipe for transcribe)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        recipe_file, text = self.exp_dir / "recipe.yaml", dump_recipe(self.recipe)
        if not recipe_file.is_file() or recipe_file.read_text(encoding="utf-8") != text:
            recipe_file.write_text(text, encoding="utf-8")
        for name, art in arts.items():
            link = self.exp_dir / name
            target = os.path.relpath(art.path, self.exp_dir)
            if link.is_symlink() and os.readlink(link) == target:
                continue
            if link.is_symlink() or link.is_file():
                link.unlink()
            elif link.is_dir():
                shutil.rmtree(link)
            tmp = self.exp_dir / f".{name}.lnk{os.getpid()}"
            os.symlink(target, tmp)
            os.replace(tmp, link)
        if "score" in arts:
            results = arts["score"].path / "scores.json"
            if results.is_file():
                shutil.copyfile(results, self.exp_dir / "scores.json")
        write_json_atomic(
            self.exp_dir / "keys.json", {k: a.key for k, a in arts.items()} | self._old_keys(arts)
        )

    def _old_keys(self, arts: dict[str, Artifact]) -> dict[str, str]:
        p = self.exp_dir / "keys.json"
        try:
            old = json.loads(p.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in old.items() if k not in arts}


_LOG_FILES: dict[Path, logging.Handler] = {}


def attach_log_file(path: Path) -> None:
    """Append (never truncate) seqpipe's log to ``path``: the log of the run this process is
    running now (a sweep's next variant logs to its own file, no longer to the one before)."""
    path = path.resolve()
    if path in _LOG_FILES:
        return
    logger = logging.getLogger("seqpipe")
    for old in _LOG_FILES.values():
        logger.removeHandler(old)
        old.close()
    _LOG_FILES.clear()
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    _LOG_FILES[path] = handler
