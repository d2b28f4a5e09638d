"""Copies the report of a finished `make demo` into docs/: docs/results.md and the figures it shows.

Usage:
    python tools/demo_results_to_docs.py [--demo runs/demo] [--docs docs] [--note "machine/load note"]

Every image the report links (relative to the demo folder) is copied to ``docs/figures/results/`` and the link
rewritten; the latent view also goes to ``docs/figures/latent_umap.png`` and the training curve to
``docs/figures/train_small.png`` (the figures other pages show). Files are written atomically.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from geosane_hf.atomic_io import copy_file, write_text

IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+\.png)\)")
ALSO = {"embeddings/latent_umap.png": "latent_umap.png", "train/training_curve.png": "train_small.png"}


def _resolve(link: str, demo: Path, report_dir: Path) -> Path:
    candidate = (report_dir / link).resolve()
    return candidate if candidate.is_file() else (demo / link).resolve()


def copy_results(demo: Path, docs: Path, note: str | None = None) -> Path:
    """Writes docs/results.md from demo/results.md (+ the evaluation's own report links); returns its path."""
    report = demo / "results.md"
    if not report.is_file():
        raise FileNotFoundError(f"expected a finished demo report at {report}; run `make demo` first")
    demo = demo.resolve()
    figures = docs / "figures" / "results"
    text = report.read_text()

    def replace(match: re.Match) -> str:
        alt, link = match.groups()
        source = _resolve(link, demo, demo)
        if not source.is_file():  # links of the embedded evaluation / zoo reports are relative to their folders
            for sub in ("evaluation", "zoo_experiment"):
                if (demo / sub / link).is_file():
                    source = (demo / sub / link).resolve()
                    break
        if not source.is_file():
            return match.group(0)
        name = source.relative_to(demo).as_posix().replace("/", "__")
        copy_file(source, figures / name)
        rel = source.relative_to(demo).as_posix()
        if rel in ALSO:
            copy_file(source, docs / "figures" / ALSO[rel])
        return f"![{alt}](figures/results/{name})"

    body = IMAGE.sub(replace, text)
    header = ""
    if note:
        header = f"> {note}\n\n"
    return write_text(docs / "results.md", header + body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default="runs/demo", help="the demo output folder")
    parser.add_argument("--docs", default="docs", help="the docs folder")
    parser.add_argument("--note", default=None, help="a line above the report (date, machine, load)")
    args = parser.parse_args(argv)
    try:
        out = copy_results(Path(args.demo), Path(args.docs), args.note)
    except FileNotFoundError as error:
        print(f"demo_results_to_docs: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
