"""Research runner (issue 15, transfer): do RS-tuned relatives from *other data sources* make a better start?

For each evaluated built-in task, leave its data source out: members are the packaged ImageNet `--arch` fine-tuned
on every built-in task of another source (cached, :mod:`geosane_hf.experiments.members`; their image hashes are checked
against the evaluated task's). Then, per seed, these starts are fine-tuned with one protocol on a few labels of the
evaluated task (`--fraction` of its train split, at least `--min-train`):

- ``scratch``, ``imagenet_prompt`` (band-adapted by wavelength, head seeded);
- ``member:<task>`` (each relative's body, the prompt's band-adapted stem) and ``member_average`` (their mean: they
  share the ImageNet initialisation, so no alignment is needed);
- ``blend_average`` = prompt + t * (member_average - prompt) with t = `--blend` (weight space);
- ``noise_matched`` = prompt + noise matched *per tensor* to blend_average's change.

Every row (task, start, seed, protocol, score, curve, seconds) is appended to ``OUT/rows.jsonl`` and reused on a rerun
(resumable); ``OUT/summary.md`` holds mean +- std per start and the wins over the prompt, ``OUT/plots/`` a convergence plot
(score per epoch, mean +- std over seeds) per task and protocol.

Usage:
    python tools/research_transfer.py --out runs/research/transfer --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from geosane_hf.atomic_io import write_text
from geosane_hf.evaluation.finetune import FinetuneConfig, finetune
from geosane_hf.evaluation.geosane_start import fitted_prompt
from geosane_hf.evaluation.starts import Start, checkpoint_average, lerp_state_dicts, matched_noise, scratch
from geosane_hf.evaluation.tasks import TASKS, Task
from geosane_hf.experiments.members import MemberBudget, member_body, relatives, source_of, tune_member
from geosane_hf.plots import convergence_figure, save_figure


def _eval_task(name: str, fraction: float, min_train: int, max_test: int | None) -> Task:
    full = Task.from_name(name)
    n = max(min_train, round(fraction * len(full.data.train)))
    caps = {"max_train": min(n, len(full.data.train))}
    if max_test and len(full.data.test) > max_test:
        caps["max_test"] = max_test
    return Task.from_name(name, **caps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/research/transfer")
    parser.add_argument("--arch", default="tf_efficientnet_lite0")
    parser.add_argument("--tasks", default=",".join(TASKS), help="evaluated tasks (comma-separated)")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of the train split used (few labels)")
    parser.add_argument("--min-train", type=int, default=8)
    parser.add_argument("--max-test", type=int, default=500)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--probe-epochs", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--blend", type=float, default=0.5)
    parser.add_argument("--member-max-train", type=int, default=1000)
    parser.add_argument("--member-epochs", type=int, default=3)
    parser.add_argument("--starts", default="", help="only these starts (comma-separated; default: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    rows = _load_rows(rows_path)
    protocol = {"epochs": args.epochs, "probe_epochs": args.probe_epochs, "lr": args.lr, "fraction": args.fraction}
    done = {(r["task"], r["start"], r["seed"], json.dumps(r["protocol"], sort_keys=True)) for r in rows}
    budget = MemberBudget(max_train=args.member_max_train, epochs=args.member_epochs)
    wanted = set(filter(None, args.starts.split(",")))

    for task_name in args.tasks.split(","):
        task = _eval_task(task_name, args.fraction, args.min_train, args.max_test)
        target = task.target_for(args.arch)
        sources = [t for t in TASKS if source_of(t) != source_of(task_name)]
        members = []
        for source in sources:
            started = time.perf_counter()
            member = tune_member(args.arch, source, budget, cache=out / "members")
            print(
                f"member {source}: {member.primary_metric} {member.score:.3f} ({time.perf_counter() - started:.0f} s)"
            )
            members.append(member)
        members = relatives(members, task)
        print(
            f"{task_name}: {len(task.data.train)} train, {len(task.data.test)} test; members {[m.task for m in members]}"
        )
        model_for_keys = target.create()
        for seed in map(int, args.seeds.split(",")):
            prompt = fitted_prompt(target, seed, bands=task.data.band_names)
            bodies = {m.task: member_body(m, prompt.state_dict, model_for_keys) for m in members}
            average = checkpoint_average(list(bodies.values())).state_dict
            blend = Start("blend_average", target, lerp_state_dicts(prompt.state_dict, average, args.blend))
            starts = {
                "scratch": scratch(target, seed),
                "imagenet_prompt": prompt,
                "member_average": Start("member_average", target, average),
                "blend_average": blend,
                "noise_matched": matched_noise(prompt, blend, seed=seed, per_tensor=True),
                **{f"member:{t}": Start(f"member:{t}", target, b) for t, b in bodies.items()},
            }
            for name, start in starts.items():
                key = (task_name, name, seed, json.dumps(protocol, sort_keys=True))
                if key in done or (wanted and name not in wanted):
                    continue
                model = task.build_model(target, start.state_dict, head_seed=seed)
                config = FinetuneConfig(
                    epochs=args.epochs, probe_epochs=args.probe_epochs, lr=args.lr, seed=seed, progress=False
                )
                result = finetune(model, task, config)
                row = {
                    "task": task_name,
                    "start": name,
                    "seed": seed,
                    "protocol": protocol,
                    "arch": args.arch,
                    "score": result.score,
                    "initial": result.initial_metrics.get(result.primary_metric),
                    "curve": [h.metrics.get(result.primary_metric) for h in result.history],
                    "seconds": round(result.seconds, 1),
                    "members": [m.task for m in members],
                    "n_train": len(task.data.train),
                }
                rows.append(row)
                done.add(key)
                with open(rows_path, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(f"  seed {seed} {name:48s} {result.score:.4f} ({result.seconds:.0f} s)", flush=True)
    _summary(rows, out / "summary.md")


def _load_rows(path: Path) -> list[dict]:
    """The rows of earlier runs; a last line cut off by a kill is dropped (its run is redone), other damage is an error."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number < len(lines):
                raise SystemExit(
                    f"expected one JSON row per line in {path}, line {number} is damaged ({error}); "
                    "fix or delete that line and run again"
                ) from error
            print(f"dropping the cut-off last row of {path} (a killed run); it runs again")
            write_text(path, "".join(f"{json.dumps(r)}\n" for r in rows))
    return rows


def _summary(rows: list[dict], path: Path) -> None:
    """Mean +- std per (task, protocol, start), the difference to the prompt and the seeds above it."""
    lines = [
        "| task | protocol | start | mean ± std | n | - prompt | sd of the paired differences | above prompt |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    curves: dict[tuple[str, str], dict[str, list[list[float | None]]]] = {}
    for r in rows:
        p = r["protocol"]
        proto = f"{p['probe_epochs']} probe + {p['epochs']} epochs" if p["probe_epochs"] else f"{p['epochs']} epochs"
        proto += f", lr {p['lr']:g}"
        groups.setdefault((r["task"], proto), {}).setdefault(r["start"], {})[r["seed"]] = r["score"]
        curves.setdefault((r["task"], proto), {}).setdefault(r["start"], []).append([r["initial"], *r["curve"]])
    for (task, proto), starts in groups.items():
        prompt = starts.get("imagenet_prompt", {})
        spread = statistics.stdev(prompt.values()) if len(prompt) > 1 else 0.0
        for name, scores in starts.items():
            values = list(scores.values())
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            paired = [s for s in scores if s in prompt]
            wins = sum(1 for s in paired if scores[s] > prompt[s])
            diffs = [scores[s] - prompt[s] for s in paired]
            diff = statistics.mean(diffs) if diffs else float("nan")
            paired_sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
            beyond = (
                " (beyond the spread)"
                if len(paired) > 1 and name != "imagenet_prompt" and abs(diff) > max(std, spread)
                else ""
            )
            lines.append(
                f"| {task} | {proto} | {name} | {statistics.mean(values):.3f} ± {std:.3f} | {len(values)} | "
                f"{diff:+.3f}{beyond} | {paired_sd:.3f} | {wins}/{len(paired)} |"
            )
    write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines))
    for (task, proto), by_start in curves.items():  # a convergence plot per task and protocol
        slug = "".join(c if c.isalnum() else "-" for c in f"{task}__{proto}").strip("-")
        fig = convergence_figure(by_start, "score", title=f"{task}: {proto} (mean +- std over seeds)")
        save_figure(fig, path.parent / "plots" / f"{slug}.png")


if __name__ == "__main__":
    main()
