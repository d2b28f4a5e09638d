"""The typed configuration of a comparison of starts (:class:`ExperimentConfig`), loadable from YAML.

A config names the tasks (with :meth:`Task.from_name` overrides such as ``max_train``), the target architectures
(globally or per task; a larger ``teacher`` of the same family enables weight selection, magnitude pruning and
distillation), the starts (names of :data:`START_KINDS`, ``geosane:<sampler>``), the seeds, the one
:class:`FinetuneConfig` every start gets, and the GeoSANE model, collection and store. Unknown keys at any level
raise :class:`ExperimentConfigError` listing the valid keys; unknown tasks and starts say "did you mean".

Packaged configs live in ``geosane_hf/resources/experiments/`` (``demo``, ``quick``); :func:`load_experiment_config`
takes such a name or a path. Relative paths inside a config are relative to the working directory.

The pieces: :mod:`.start_kinds` (the kinds of start, :func:`parse_start`), :mod:`.specs` (:class:`TaskSpec`,
:class:`TargetSpec`, :class:`GeoSANESpec`) and :mod:`.parsing` (the error, the mapping readers); their public names
stay importable from here.

Example:
    >>> cfg = ExperimentConfig.from_dict({
    ...     "tasks": [{"name": "statlog-classification", "max_train": 16, "max_test": 16}],
    ...     "targets": ["test_resnet"], "starts": ["scratch"], "seeds": [0, 1], "finetune": {"epochs": 1}})
    >>> [t.name for t in cfg.tasks], cfg.targets_of(cfg.tasks[0])[0].architecture, cfg.finetune.epochs
    (['statlog-classification'], 'test_resnet', 1)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from geosane_hf.evaluation.finetune import FinetuneConfig
from geosane_hf.experiments.transfer.parsing import (
    ExperimentConfigError,
    _check_keys,
    _did_you_mean,
    _int_list,
    _str_list,
)
from geosane_hf.experiments.transfer.specs import BAND_METHODS as BAND_METHODS  # re-exported
from geosane_hf.experiments.transfer.specs import GeoSANESpec, TargetSpec, TaskSpec, _check_task_name
from geosane_hf.experiments.transfer.start_kinds import (
    DEFAULT_STARTS,
    SAMPLERS,
    START_KINDS,
    StartKind,
    _canonical_start,
    parse_start,
)

__all__ = [
    "DEFAULT_STARTS",
    "SAMPLERS",
    "START_KINDS",
    "ExperimentConfig",
    "ExperimentConfigError",
    "GeoSANESpec",
    "StartKind",
    "TargetSpec",
    "TaskSpec",
    "bundled_experiment",
    "load_experiment_config",
    "packaged_experiments",
    "parse_start",
]


_FINETUNE_KEYS = [f.name for f in fields(FinetuneConfig) if f.name != "seed"]


def _finetune_from(data: Any) -> FinetuneConfig:
    data = _check_keys(data or {}, FinetuneConfig, "finetune", extra=("seed",)) if data is not None else {}
    data.setdefault("progress", False)
    try:
        return FinetuneConfig(**data)
    except (TypeError, ValueError) as error:
        raise ExperimentConfigError(f"bad finetune section: {error}; valid keys: {_FINETUNE_KEYS}") from error


@dataclass(frozen=True)
class ExperimentConfig:
    """A comparison of starts: tasks x targets x starts x seeds, one fine-tuning protocol.

    Attributes:
        name: experiment name (results headline).
        description: one paragraph for results.md.
        tasks: the tasks.
        targets: targets of every task without its own `targets`.
        starts: starts of every target without its own `starts` (names of :data:`START_KINDS`).
        seeds: seeds (>= 3 for a reported comparison); each run's start and fine-tuning use its seed.
        finetune: the protocol, identical for every start (its seed is replaced by each seed).
        geosane: GeoSANE model, collection, store and generation options.
        noise_relative_norm: plain ``prompt_plus_noise`` noise (relative to the prompt's norm) when no GeoSANE
            model is configured to match.
        pruning_scope: "global" or "layerwise" magnitude pruning.
        workers: processes running independent runs (each with one torch thread).
    """

    name: str = "experiment"
    description: str = ""
    tasks: tuple[TaskSpec, ...] = ()
    targets: tuple[TargetSpec, ...] = ()
    starts: tuple[str, ...] = DEFAULT_STARTS
    seeds: tuple[int, ...] = (0, 1, 2)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(epochs=3, progress=False))
    geosane: GeoSANESpec = field(default_factory=GeoSANESpec)
    noise_relative_norm: float = 0.05
    pruning_scope: str = "global"
    workers: int = 1

    # -------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
        """Builds and validates a config from a (YAML) mapping; unknown keys raise ExperimentConfigError."""
        data = _check_keys(data, cls, source)
        kwargs: dict[str, Any] = {}
        if "name" in data:
            kwargs["name"] = str(data["name"])
        if "description" in data:
            kwargs["description"] = str(data["description"] or "")
        if "tasks" in data:
            tasks = data["tasks"]
            if not isinstance(tasks, list):
                raise ExperimentConfigError(f"expected a list for tasks, got {tasks!r}")
            kwargs["tasks"] = tuple(TaskSpec.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks))
        if "targets" in data:
            targets = data["targets"]
            if not isinstance(targets, list):
                raise ExperimentConfigError(f"expected a list for targets, got {targets!r}")
            kwargs["targets"] = tuple(TargetSpec.from_dict(t, f"targets[{i}]") for i, t in enumerate(targets))
        if "starts" in data:
            kwargs["starts"] = tuple(_canonical_start(s) for s in _str_list(data["starts"], "starts"))
        if "seeds" in data:
            kwargs["seeds"] = _int_list(data["seeds"], "seeds")
        if "finetune" in data:
            kwargs["finetune"] = _finetune_from(data["finetune"])
        if "geosane" in data:
            kwargs["geosane"] = GeoSANESpec.from_dict(data["geosane"])
        for key in ("noise_relative_norm", "pruning_scope", "workers"):
            if key in data:
                kwargs[key] = data[key]
        config = cls(**kwargs)
        config.validate(runnable=False)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        """Reads a YAML experiment config.

        A top-level ``extends: NAME`` (a packaged config, or a YAML path relative to this file) starts from that
        config; every other top-level key of this file replaces the base's key of the same name.

        >>> cfg = ExperimentConfig.from_yaml(packaged_experiments()["quick"])
        >>> cfg.seeds
        (0, 1)
        """
        path = Path(path)
        return cls.from_dict(_read_config_yaml(path, ()), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "tasks": [t.to_dict() for t in self.tasks],
            "targets": [t.to_dict() for t in self.targets],
            "starts": list(self.starts),
            "seeds": list(self.seeds),
            "finetune": self.finetune.to_dict(),
            "geosane": self.geosane.to_dict(),
            "noise_relative_norm": self.noise_relative_norm,
            "pruning_scope": self.pruning_scope,
            "workers": self.workers,
        }

    # -------------------------------------------------------------------------------------------- views

    def targets_of(self, task: TaskSpec) -> tuple[TargetSpec, ...]:
        """The targets of a task (its own, else the experiment's)."""
        return task.targets if task.targets is not None else self.targets

    def starts_of(self, target: TargetSpec) -> tuple[str, ...]:
        """The starts of a target (its own, else the experiment's)."""
        return target.starts if target.starts is not None else self.starts

    def all_starts(self) -> list[str]:
        """Every start named anywhere in the config, in first-seen order."""
        seen: dict[str, None] = {}
        for task in self.tasks:
            for target in self.targets_of(task):
                seen.update(dict.fromkeys(self.starts_of(target)))
        return list(seen)

    def geosane_samplers(self, target: TargetSpec) -> list[str]:
        """Samplers of the GeoSANE starts a target needs (its own and those its noise baselines are matched to)."""
        needed: dict[str, None] = {}
        for name in self.starts_of(target):
            kind, sampler = parse_start(name)
            if kind.name == "geosane":
                needed[sampler] = None
            elif kind.name in ("prompt_plus_noise", "checkpoint_plus_noise") and self.geosane.model:
                needed[sampler or self.geosane.match_sampler] = None
        return list(needed)

    # -------------------------------------------------------------------------------------------- edits

    def select(
        self,
        tasks: Sequence[str] | None = None,
        starts: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> ExperimentConfig:
        """The sub-experiment of some tasks, starts (each target keeps those of its own it has) and seeds.

        >>> cfg = ExperimentConfig.from_yaml(packaged_experiments()["quick"]).select(starts=["scratch"], seeds=[0])
        >>> cfg.all_starts(), cfg.seeds
        (['scratch'], (0,))
        """
        config = self
        if tasks is not None:
            names = [t.name for t in self.tasks]
            for name in tasks:
                if name not in names:
                    raise ExperimentConfigError(
                        f"expected a task of this experiment {names}, got {name!r}." + _did_you_mean(name, names)
                    )
            config = replace(config, tasks=tuple(t for t in self.tasks if t.name in set(tasks)))
        if starts is not None:
            chosen = [_canonical_start(s) for s in starts]
            present = self.all_starts()
            for name in chosen:
                if name not in present:
                    raise ExperimentConfigError(
                        f"expected a start of this experiment {present}, got {name!r}." + _did_you_mean(name, present)
                    )

            def keep(target: TargetSpec) -> TargetSpec:
                own = config.starts_of(target)
                return replace(target, starts=tuple(s for s in own if s in chosen))

            config = replace(
                config,
                starts=tuple(s for s in config.starts if s in chosen),
                targets=tuple(keep(t) for t in config.targets),
                tasks=tuple(
                    replace(t, targets=tuple(keep(x) for x in t.targets)) if t.targets is not None else t
                    for t in config.tasks
                ),
            )
        if seeds is not None:
            config = replace(config, seeds=_int_list(list(seeds), "seeds"))
        config.validate(runnable=False)
        return config

    def with_geosane(self, **changes: Any) -> ExperimentConfig:
        """The config with GeoSANE fields replaced (None values are ignored), e.g. ``model=``, ``store=``.

        >>> ExperimentConfig().with_geosane(model="runs/small/model", store=None).geosane.model
        'runs/small/model'
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes:
            return self
        unknown = [k for k in changes if k not in {f.name for f in fields(GeoSANESpec)}]
        if unknown:
            raise ExperimentConfigError(
                f"unknown GeoSANE field(s) {unknown}; valid: {[f.name for f in fields(GeoSANESpec)]}"
            )
        changes = {k: str(v) if isinstance(v, Path) else v for k, v in changes.items()}
        return replace(self, geosane=replace(self.geosane, **changes))

    # -------------------------------------------------------------------------------------------- validation

    def validate(self, runnable: bool = True) -> None:
        """Raises ExperimentConfigError when the config is wrong (unknown names, bad values, ...).

        Args:
            runnable: also require what running needs (a GeoSANE model for GeoSANE and matched starts, a
                collection for the kde sampler); loading a config checks only its structure, so packaged configs
                load without a model and the model can be given later (``with_geosane``, ``--model``).
        """

        if not self.tasks:
            raise ExperimentConfigError("expected at least one task in `tasks`, got none")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ExperimentConfigError(f"expected distinct task names, got {names}")
        for task in self.tasks:
            _check_task_name(task)
            targets = self.targets_of(task)
            if not targets:
                raise ExperimentConfigError(f"expected targets for task {task.name!r} (or global `targets`), got none")
            archs = [t.architecture for t in targets]
            if len(set(archs)) != len(archs):
                raise ExperimentConfigError(f"expected distinct target architectures for {task.name!r}, got {archs}")
            for target in targets:
                starts = self.starts_of(target)
                if len(set(starts)) != len(starts):
                    raise ExperimentConfigError(f"expected distinct starts for {target.architecture}, got {starts}")
                for name in starts:
                    kind, sampler = parse_start(name)
                    if not runnable:
                        continue
                    if kind.needs_model and not self.geosane.model:
                        raise ExperimentConfigError(
                            f"start {name!r} needs a GeoSANE model: set geosane.model in the config or pass "
                            "--model PATH (a save_pretrained folder or Hub id)"
                        )
                    if kind.takes_sampler and sampler and kind.name != "geosane" and not self.geosane.model:
                        raise ExperimentConfigError(
                            f"start {name!r} is matched to a GeoSANE start: set geosane.model or pass --model PATH"
                        )
                for sampler in self.geosane_samplers(target):
                    if runnable and sampler == "kde" and not self.geosane.collection:
                        raise ExperimentConfigError(
                            "the GeoSANE sampler 'kde' needs a collection (anchors): set geosane.collection or pass "
                            "--collection DIR (geosane collect output)"
                        )
        self._check_architectures()
        if not self.seeds:
            raise ExperimentConfigError("expected at least one seed, got none")
        if self.pruning_scope not in ("global", "layerwise"):
            raise ExperimentConfigError(f"expected pruning_scope 'global' or 'layerwise', got {self.pruning_scope!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ExperimentConfigError(f"expected workers to be an integer >= 1, got {self.workers!r}")
        if not isinstance(self.noise_relative_norm, (int, float)) or self.noise_relative_norm < 0:
            raise ExperimentConfigError(f"expected noise_relative_norm >= 0, got {self.noise_relative_norm!r}")
        self.geosane.check()

    def _check_architectures(self) -> None:
        import timm

        for task in self.tasks:
            for target in self.targets_of(task):
                for arch in (target.architecture, target.teacher):
                    if arch is not None and not timm.is_model(arch):
                        near = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.5)
                        raise ExperimentConfigError(
                            f"expected a timm architecture for task {task.name!r}, got {arch!r}."
                            + (f" Did you mean {', '.join(near)}?" if near else "")
                        )


def _read_config_yaml(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The mapping of an experiment YAML with its ``extends`` chain resolved (child keys replace the base's)."""
    import yaml

    if not path.is_file():
        raise ExperimentConfigError(
            f"expected an experiment config file (YAML) or a packaged name {sorted(packaged_experiments())}, "
            f"got {str(path)!r} (not found)"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ExperimentConfigError(f"expected valid YAML in {path}, got: {error}") from error
    if not isinstance(data, dict):
        raise ExperimentConfigError(f"expected a mapping of settings in {path}, got {type(data).__name__}")
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    packaged = packaged_experiments()
    if not isinstance(base_name, str) or not base_name:
        raise ExperimentConfigError(f"expected 'extends' in {path} to name a config, got {base_name!r}")
    base_path = packaged[base_name] if base_name in packaged else (path.parent / base_name)
    if base_path.resolve() in {p.resolve() for p in (*chain, path)}:
        raise ExperimentConfigError(f"expected an 'extends' chain without a cycle, got {path} -> {base_name}")
    return {**_read_config_yaml(base_path, (*chain, path)), **data}


def packaged_experiments() -> dict[str, Path]:
    """{name: path} of the experiment configs shipped in ``geosane_hf/resources/experiments``.

    >>> sorted(packaged_experiments())
    ['demo', 'heldout', 'heldout-cross', 'heldout-quick', 'quick', 'samplers']
    """
    folder = Path(str(resources.files("geosane_hf").joinpath("resources", "experiments")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def bundled_experiment(name: str) -> ExperimentConfig:
    """A packaged experiment config by name.

    >>> bundled_experiment("demo").seeds
    (0, 1, 2)
    """
    packaged = packaged_experiments()
    if name not in packaged:
        raise ExperimentConfigError(
            f"expected a packaged experiment among {sorted(packaged)}, got {name!r}." + _did_you_mean(name, packaged)
        )
    return ExperimentConfig.from_yaml(packaged[name])


def load_experiment_config(name_or_path: str | Path) -> ExperimentConfig:
    """A packaged config by name ("demo", "quick", "samplers") or a YAML file.

    >>> load_experiment_config("quick").name
    'quick'
    """
    packaged = packaged_experiments()
    text = str(name_or_path)
    if text in packaged and not Path(text).exists():
        return ExperimentConfig.from_yaml(packaged[text])
    return ExperimentConfig.from_yaml(text)
