"""The experiment's report: every fold's comparison, and GeoSANE's wins, ties and losses per baseline.

A *cell* is one (task, target) of one fold. GeoSANE's recommended start wins a cell against a baseline when its mean
over the seeds is higher by more than the spread (the larger of the two seed standard deviations), loses it when
lower by more, and ties otherwise: the verdict rule of ``geosane evaluate`` (:mod:`geosane_hf.experiments.transfer`).

Example:
    >>> cells = [{"task": "t", "target": "a", "verdicts": {"geosane:interpolate": [
    ...     {"opponent": "scratch", "difference": 0.1, "exceeds_spread": True},
    ...     {"opponent": "imagenet_prompt", "difference": -0.01, "exceeds_spread": False}]}}]
    >>> [(t.baseline, t.wins, t.ties, t.losses) for t in tally(cells)]
    [('scratch', 1, 0, 0), ('imagenet_prompt', 0, 1, 0)]
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geosane_hf.atomic_io import write_text
from geosane_hf.experiments.heldout.config import STATE_FILE, HeldoutConfig, HeldoutError
from geosane_hf.generation.registry import DEFAULT_SAMPLER

__all__ = [
    "RECOMMENDED",
    "SAME_AS_PROMPT",
    "Tally",
    "aa_verdicts",
    "read_fold_tables",
    "tally",
    "write_docs",
    "write_report",
]

#: GeoSANE's recommended configuration, the start every baseline is counted against.
RECOMMENDED = f"geosane:{DEFAULT_SAMPLER}"


@dataclass
class Tally:
    """GeoSANE's recommended start against one baseline over every cell that has both."""

    baseline: str
    wins: int = 0
    ties: int = 0
    losses: int = 0
    cells: list[str] = field(default_factory=list)  # "task / target: win|tie|loss (difference)"

    @property
    def total(self) -> int:
        return self.wins + self.ties + self.losses


def tally(tables: Sequence[dict[str, Any]], start: str = RECOMMENDED) -> list[Tally]:
    """Win/tie/loss of `start` per baseline, in the order baselines first appear (``results.json`` tables)."""
    out: dict[str, Tally] = {}
    for table in tables:
        for verdict in table.get("verdicts", {}).get(start, []):
            row = out.setdefault(verdict["opponent"], Tally(verdict["opponent"]))
            diff = verdict["difference"]
            outcome = "tie" if not verdict["exceeds_spread"] else ("win" if diff > 0 else "loss")
            if outcome == "win":
                row.wins += 1
            elif outcome == "loss":
                row.losses += 1
            else:
                row.ties += 1
            row.cells.append(f"{table['task']} / {table['target']}: {outcome} ({diff:+.3f})")
    return list(out.values())


def read_fold_tables(config: HeldoutConfig) -> dict[str, list[dict[str, Any]] | None]:
    """{fold: the tables of its ``evaluation/results.json``, or None when its evaluate stage is not done with the
    current settings}, for every fold of the comparison, in its order."""
    from geosane_hf.experiments.heldout.run import heldout_stages

    state = _state(config)
    current = {stage.name: stage.fingerprint for stage in heldout_stages(config)}
    out: dict[str, list[dict[str, Any]] | None] = {}
    for name, fingerprint in current.items():
        if not name.startswith("evaluate-"):
            continue
        fold = name[len("evaluate-") :]
        record = state.get(name, {})
        path = config.path("folds", fold, "evaluation", "results.json")
        done = record.get("done") and record.get("fingerprint") == fingerprint and path.is_file()
        out[fold] = json.loads(path.read_text())["tables"] if done else None
    return out


def _state(config: HeldoutConfig) -> dict[str, Any]:
    path = config.path(STATE_FILE)
    return json.loads(path.read_text()) if path.is_file() else {}


#: GeoSANE starts closer than this (L2 over the distance keys) to the prompt are the prompt up to float round-off.
SAME_AS_PROMPT = 1e-3


def _same_as_prompt(table: dict[str, Any], start: str = RECOMMENDED) -> bool:
    """Whether `start` is the prompt itself in this table (e.g. the default sampler with no partner)."""
    row = next((r for r in table.get("rows", []) if r.get("start") == start), None)
    return row is not None and row.get("distance") is not None and row["distance"] < SAME_AS_PROMPT


def aa_verdicts(folds: dict[str, list[dict[str, Any]]], start: str = RECOMMENDED) -> list[dict[str, Any]]:
    """Verdicts of `start` against starts with the same weights (the prompt and the noise matched to a zero change)
    in the cells where `start` is the prompt itself: an A/A test of the verdict rule (any win or loss is the
    protocol's instability, not a property of a start)."""
    out = []
    for fold, tables in folds.items():
        for table in tables:
            if not _same_as_prompt(table, start):
                continue
            for v in table.get("verdicts", {}).get(start, []):
                if v["opponent"] == "imagenet_prompt" or v["opponent"].startswith("prompt_plus_noise"):
                    out.append({"fold": fold, "task": table["task"], "target": table["target"], **v})
    return out


def _cell_rows(folds: dict[str, list[dict[str, Any]]], start: str) -> list[str]:
    lines = [
        "| fold | task | target | baseline | GeoSANE | baseline | difference | spread | seeds GeoSANE higher | verdict |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for fold, tables in folds.items():
        for table in tables:
            for v in table.get("verdicts", {}).get(start, []):
                verdict = "tie" if not v["exceeds_spread"] else ("**win**" if v["difference"] > 0 else "**loss**")
                if _same_as_prompt(table, start):
                    verdict += " (GeoSANE = prompt)"
                lines.append(
                    f"| {fold} | {table['task']} | {table['target']} | {v['opponent']} | {v['mean']:.3f} | "
                    f"{v['opponent_mean']:.3f} | {v['difference']:+.3f} | {v['spread']:.3f} | "
                    f"{v['wins']}/{v['seeds']} | {verdict} |"
                )
    return lines


def write_report(config: HeldoutConfig) -> tuple[Path, list[Tally]]:
    """Writes ``experiment.md`` and ``experiment.json`` into ``config.out_dir``; returns the report and the tallies."""
    every = read_fold_tables(config)
    folds = {fold: tables for fold, tables in every.items() if tables is not None}
    if not folds:
        raise HeldoutError(
            f"expected at least one evaluated fold in {config.out_dir} (folds: {list(every)}), got none: run "
            f"`geosane experiment --out {config.out_dir}` (without --only) first"
        )
    missing = [fold for fold, tables in every.items() if tables is None]
    state = _state(config)
    failed = [
        line for fold in folds for line in state.get(f"evaluate-{fold}", {}).get("summary", {}).get("failed", [])
    ]
    tallies = tally([t for tables in folds.values() for t in tables])
    lines = [
        "# Leave one data source out: GeoSANE's recommended start against every baseline",
        "",
        f"Command: `make experiment` (= `geosane experiment --out {config.out_dir}"
        f"{' --quick' if config.quick else ''}`). "
        f"Settings: `{json.dumps(asdict(config), default=str)}`",
        "",
        f"Each fold trains a GeoSANE on a population without that data source (the packaged real checkpoints, the "
        f"trained zoo, and {', '.join(config.member_architectures)} fine-tuned on the other sources' tasks for "
        f"{config.member_epochs} epochs) and runs the `{config.experiment}` comparison on the source's tasks. "
        f"A cell is one (task, target); **win** / **loss**: {RECOMMENDED}'s mean is higher / lower than the "
        "baseline's by more than the spread (the larger of the two seed standard deviations), else tie.",
        "",
        *(
            [f"**Not evaluated yet (not counted):** {', '.join(missing)}; rerun the command to finish them.", ""]
            if missing
            else []
        ),
        *([f"**Failed runs ({len(failed)}), not counted:** " + "; ".join(failed[:20]), ""] if failed else []),
        f"## Win / tie / loss of {RECOMMENDED} per baseline",
        "",
        "| baseline | win | tie | loss | cells |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {t.baseline} | {t.wins} | {t.ties} | {t.losses} | {t.total} |" for t in tallies]
    lines += ["", "## Every comparison", "", *_cell_rows(folds, RECOMMENDED)]
    aa = aa_verdicts(folds)
    if aa:
        beyond = [v for v in aa if v["exceeds_spread"]]
        lines += [
            "",
            "## The verdict rule on identical starts (A/A)",
            "",
            f"Where {RECOMMENDED} has no partner of the target's architecture it returns the prompt itself (L2 "
            f"distance < {SAME_AS_PROMPT:g}: float round-off of the decoder), and the matched noise then has norm ~0: "
            "these verdicts compare a start with itself, so every **win** or **loss** among them is the instability "
            "of fine-tuning (a change of 1e-7 in the weights moves the result as much as a change of seed), a false "
            f"positive of the rule. Here: {len(beyond)} of {len(aa)} such verdicts are beyond the spread.",
            "",
            "| fold | task | target | baseline | difference | spread | verdict |",
            "|---|---|---|---|---:|---:|---|",
        ]
        lines += [
            f"| {v['fold']} | {v['task']} | {v['target']} | {v['opponent']} | {v['difference']:+.3f} | "
            f"{v['spread']:.3f} | {'beyond the spread' if v['exceeds_spread'] else 'tie'} |"
            for v in aa
        ]
    lines += ["", "## The leave-out check", ""]
    lines += [
        "A fold's population holds nothing trained on its source: members are tuned on other sources' tasks "
        "(`SOURCES` in geosane_hf.experiments.members groups tasks made of the same scenes or tiles), zoo models "
        "trained on the source's data are left out (`ZOO_DATA_SOURCES`), and every image of the fold's tasks (whole "
        "train and test splits) is hashed (sha256 of its float32 tensor) and compared with the images of every "
        "member of another source: a shared image stops the run. The hash catches identical tensors; other tilings "
        "of one scene differ in hash, which is why the source grouping is the rule. The packaged real checkpoints "
        "(ukis-csmask, geoembed) were trained elsewhere (SPARCS, CloudSEN12+ and others; their data is not here to "
        "hash).",
        "",
        "| fold | task | data sha256 | images | shared with other sources' members | zoo models left out | members |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for name, record in state.items():
        if not name.startswith("collect-"):
            continue
        summary = record.get("summary", {})
        for task, check in summary.get("leave_out_check", {}).items():
            zoo = summary.get("zoo_left_out", {})
            lines.append(
                f"| {name[len('collect-') :]} | {task} | `{check['data_sha256'][:16]}` | {check['images']} | "
                f"{check['images_shared']} | {zoo.get('models', 0)} ({', '.join(zoo.get('datasets', [])) or '-'}) | "
                f"{', '.join(summary.get('members', []))} |"
            )
    lines += ["", "## Stages", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {record['seconds']:.0f} |" for name, record in state.items()]
    for fold in folds:
        results = config.path("folds", fold, "evaluation", "results.md")
        if results.is_file():
            text = results.read_text().strip()
            text = re.sub(r"\]\((plots/[^)]+)\)", rf"](folds/{fold}/evaluation/\1)", text)
            text = re.sub(r"^#", "###", text, flags=re.M)
            lines += ["", f"## Fold {fold}: every start", "", text]
    path = write_text(config.path("experiment.md"), "\n".join(lines) + "\n")
    write_text(
        config.path("experiment.json"),
        json.dumps({"tally": [asdict(t) for t in tallies], "folds": folds}, indent=1, default=str) + "\n",
    )
    return path, tallies


def write_docs(config: HeldoutConfig, docs: str | Path) -> Path:
    """Copies the report to ``<docs>/experiment.md`` and its plots to ``<docs>/figures/experiment/<fold>/``."""
    docs = Path(docs)
    report = config.path("experiment.md")
    if not report.is_file():
        write_report(config)
    text = report.read_text()
    for fold, tables in read_fold_tables(config).items():
        if tables is None:
            continue
        for plot in sorted(config.path("folds", fold, "evaluation", "plots").glob("*.png")):
            target = docs / "figures" / "experiment" / fold / plot.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plot, target)
        text = text.replace(f"](folds/{fold}/evaluation/plots/", f"](figures/experiment/{fold}/")
    return write_text(docs / "experiment.md", text)
