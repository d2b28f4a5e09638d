"""The demo's stages, in order (:func:`demo_stages`): each ``run(config)`` returns a JSON-able summary."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geosane_hf.experiments.demo.config import STATE_FILE, DemoConfig, DemoError, DemoStage
from geosane_hf.experiments.demo.packaged_table import tokenize_packaged


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


def holdout_runs(zoo_dir: Path, count: int = 2, keep: Callable[[dict[str, Any]], bool] | None = None) -> list[str]:
    """Model ids of ``count`` whole population runs of the most common layout, held out from training.

    Whole runs (every checkpoint of a run), because a sibling checkpoint is almost a copy. The runs are the first
    of that layout in plan order, so the choice is deterministic. ``keep`` restricts the choice to the index records
    it accepts (e.g. the models a leave-one-source-out fold trains on).
    """
    from geosane_hf.collection.zoo import read_zoo_index

    models = [r for r in read_zoo_index(zoo_dir)["models"] if keep is None or keep(r)]
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
