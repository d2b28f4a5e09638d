"""Research check (issue 15): how far apart do *identical* starts end after the experiment's fine-tuning protocol?

For one task and target (the `heldout` comparison's caps and protocol), per seed: the band-adapted ImageNet prompt
fine-tuned twice (is a run deterministic?), and the prompt plus isotropic noise of relative norm `--eps` (1e-7: the
size of a decoder's float round-off) fine-tuned once. The verdict rule of ``geosane evaluate`` (mean difference
beyond the larger seed std) applied to prompt vs prompt + eps is an A/A test: anything beyond the spread is the
protocol's instability, not a property of a start. Rows go to ``OUT/rows.jsonl`` (resumable), the summary to stdout.

Usage:
    python tools/research_instability.py --task landsat8-cloudy-classification --arch tf_efficientnet_lite1
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from geosane_hf.evaluation.finetune import finetune
from geosane_hf.evaluation.geosane_start import fitted_prompt
from geosane_hf.evaluation.starts import prompt_plus_noise
from geosane_hf.experiments import bundled_experiment
from geosane_hf.experiments.transfer.planning import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="landsat8-cloudy-classification")
    parser.add_argument("--arch", default="tf_efficientnet_lite1")
    parser.add_argument("--config", default="heldout", help="the comparison whose caps and protocol are used")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--eps", type=float, default=1e-7, help="relative norm of the perturbation")
    parser.add_argument("--out", default="runs/research/instability")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the experiment's workers
    config = bundled_experiment(args.config)
    spec = next((t for t in config.tasks if t.name == args.task), None)
    if spec is None:
        raise SystemExit(
            f"expected a task of the {args.config} comparison {[t.name for t in config.tasks]}, got {args.task!r}"
        )
    task = load_task(spec)
    target = task.target_for(args.arch)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.is_file() else []
    done = {(r["task"], r["arch"], r["start"], r["seed"], r["eps"]) for r in rows}
    for seed in args.seeds:
        prompt = fitted_prompt(target, seed, bands=task.data.band_names)
        starts = {
            "prompt": prompt.state_dict,
            "prompt (again)": prompt.state_dict,
            "prompt + eps": prompt_plus_noise(prompt, relative_norm=args.eps, seed=seed).state_dict,
        }
        for name, state in starts.items():
            key = (args.task, args.arch, name, seed, args.eps)
            if key in done:
                continue
            model = task.build_model(target, state, head_seed=seed)
            result = finetune(model, task, replace(config.finetune, seed=seed, progress=False))
            row = {
                "task": args.task,
                "arch": args.arch,
                "start": name,
                "seed": seed,
                "eps": args.eps,
                "score": result.score,
                "seconds": round(result.seconds, 1),
            }
            rows.append(row)
            with open(rows_path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(f"seed {seed} {name:16s} {result.score:.4f}", flush=True)
    mine = [r for r in rows if r["task"] == args.task and r["arch"] == args.arch and r["eps"] == args.eps]
    by = {
        name: {r["seed"]: r["score"] for r in mine if r["start"] == name}
        for name in ("prompt", "prompt (again)", "prompt + eps")
    }
    seeds = sorted(set(by["prompt"]) & set(by["prompt + eps"]))
    deterministic = all(by["prompt"][s] == by["prompt (again)"].get(s) for s in seeds)
    a = [by["prompt"][s] for s in seeds]
    b = [by["prompt + eps"][s] for s in seeds]
    spread = max(statistics.stdev(a), statistics.stdev(b))
    diff = statistics.mean(b) - statistics.mean(a)
    per_seed = [round(y - x, 4) for x, y in zip(a, b, strict=True)]
    print(f"{args.task} / {args.arch}, seeds {seeds}: same start twice gives the same score: {deterministic}")
    print(
        f"prompt {statistics.mean(a):.4f} +- {statistics.stdev(a):.4f}; prompt + {args.eps:g} {statistics.mean(b):.4f} "
        f"+- {statistics.stdev(b):.4f}; difference {diff:+.4f} (spread {spread:.4f}: "
        f"{'beyond' if abs(diff) > spread else 'within'}); per seed {per_seed}"
    )


if __name__ == "__main__":
    main()
