"""The card of a trained GeoSANE model (data, config, metrics, intended use, limits).

Metadata through huggingface_hub's ``ModelCardData`` + ``EvalResult`` (a valid ``model-index``), the body from the
packaged template ``geosane_hf/resources/model_cards/model_card.md`` (``ModelCard.from_template``). The training
dataset is named in the metadata (``datasets``, the model-index dataset type) only when it is a Hub repo id; a
local folder is named in the body.

Example:
    >>> from training.model_card import render_table
    >>> print(render_table([("a", 1)], ("key", "value")))
    | key | value |
    |---|---|
    | a | 1 |
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["render_model_card", "render_table", "write_model_card"]


def render_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return (
        f"{value:.4f}"
        if isinstance(value, float)
        else json.dumps(value)
        if isinstance(value, list | dict)
        else str(value)
    )


def render_model_card(
    *,
    config: Any,
    model_config: Any,
    data_summary: dict[str, Any],
    window: int,
    evaluations: list[dict[str, Any]],
    history: list[dict[str, float]],
    steps: int,
    num_processes: int,
    mixed_precision: str,
    repo_or_path: str = "PATH_OR_REPO",
    curve: str | None = None,
) -> str:
    """The card's Markdown (YAML front matter included)."""
    from huggingface_hub import EvalResult, ModelCardData

    from geosane_hf.cards import hub_repo_id

    final = evaluations[-1] if evaluations else None
    dataset_id = hub_repo_id(str(data_summary["source"]))
    eval_results = None
    if final is not None:
        eval_results = [
            EvalResult(
                task_type="feature-extraction",
                task_name="Weight reconstruction (held-out models)",
                dataset_type=dataset_id or "geosane-tokenized-weights",
                dataset_name=f"held-out models of {dataset_id or 'the training collection'}",
                dataset_split="held-out",
                metric_type="r2",
                metric_name="held-out reconstruction R^2 (tokens)",
                metric_value=round(float(final["r2_tokens"]), 4),
            )
        ]
    card_data = ModelCardData(
        model_name=f"geosane-{config.model_preset}",
        library_name="transformers",
        license="apache-2.0",
        tags=["geosane", "weight-space-learning", "remote-sensing"],
        pipeline_tag="feature-extraction",
        datasets=[dataset_id] if dataset_id else None,
        eval_results=eval_results,
    )
    data = render_table(
        [
            ("dataset", f"`{data_summary['source']}`"),
            ("tokenizer mode / token size", f"{data_summary['mode']} / {data_summary['token_size']}"),
            ("models (total)", data_summary["num_models"]),
            ("training models / tokens", f"{data_summary['train_models']} / {data_summary['train_tokens']:,}"),
            ("held-out models / tokens", f"{data_summary['holdout_models']} / {data_summary['holdout_tokens']:,}"),
            ("held-out ids", ", ".join(f"`{i}`" for i in data_summary["holdout_ids"]) or "none"),
            ("models with permutation augmentation", data_summary["permutable_models"]),
        ],
        ("", ""),
    )
    model_rows = [
        (k, _fmt(getattr(model_config, k)))
        for k in (
            "token_size",
            "hidden_size",
            "num_attention_heads",
            "num_encoder_layers",
            "num_decoder_layers",
            "latent_size",
            "window_size",
            "num_layer_types",
            "contrastive_weight",
            "temperature",
        )
    ]
    training_rows = [(k, _fmt(v)) for k, v in config.to_dict().items()] + [("training window", window)]
    if final is None:
        metrics = "No held-out models were configured: no held-out metrics (set `holdout_ids` or `holdout_every`)."
    else:
        rows = [
            ("tokens (mean over models)", f"{final['r2_tokens']:.4f}"),
            ("tokens (pooled)", f"{final['r2_tokens_pooled']:.4f}"),
        ]
        rows += [(f"weights: {name}", f"{value:.4f}") for name, value in sorted(final["r2_weights_by_type"].items())]
        metrics = f"At step {final['step']}, over {final['num_models']} held-out models:\n\n" + render_table(
            rows, ("held-out R^2", "value")
        )
        if history:
            metrics += f"\n\nFinal training loss: {history[-1]['loss']:.4f} (first logged: {history[0]['loss']:.4f})."
    limits = "\n".join(
        f"- {line}"
        for line in (
            f"Trained on {data_summary['train_models']} models only; the latent space covers their architectures and "
            "training regimes, not remote-sensing models in general.",
            "Reconstruction R^2 measures how well weights survive encode -> decode, not how well a generated model "
            "performs on a task; judge generated weights by fine-tuning against the baselines.",
            "Weight generators tend to produce replicas or interpolations of their training checkpoints (Zeng et al., "
            "2025): a small per-token latent or a model trained on few models reproduces what it saw.",
            "Held-out models of an architecture seen in training are easier than unseen architectures.",
            "Trained in fp32 on CPU unless stated otherwise; absolute quality at this budget is a demo, not the "
            "published GeoSANE-909M.",
        )
    )
    values = {
        "title": f"GeoSANE autoencoder ({config.model_preset}, {steps} steps)",
        "token_size": str(model_config.token_size),
        "repo_or_path": repo_or_path,
        "data": data,
        "model_config": render_table(model_rows, ("field", "value")),
        "training_config": render_table(training_rows, ("field", "value")),
        "steps": str(steps),
        "num_processes": str(num_processes),
        "mixed_precision": mixed_precision,
        "weighting": {"sqrt": "the square root", "uniform": "the 0th power (uniform)", "tokens": "the 1st power"}[
            config.weighting
        ],
        "metrics": metrics,
        "curve": f"![training curve]({curve})" if curve else "",
        "limits": limits,
    }
    from geosane_hf.cards import render_card

    return render_card("model_card", card_data, **values)


def write_model_card(model_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """Writes ``README.md`` into ``model_dir`` atomically; returns its path."""
    path = Path(model_dir) / "README.md"
    tmp = path.with_name(f".README.md.tmp-{os.getpid()}")
    tmp.write_text(render_model_card(**kwargs))
    os.replace(tmp, path)
    return path
