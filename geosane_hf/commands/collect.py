"""`geosane collect`: resolve a collection manifest into a validated folder of safetensors checkpoints.

Example:
    $ geosane collect offline --out collection/ --zoo zoo/
"""

from __future__ import annotations

import argparse
import sys

from geosane_hf.package_data import bundled_manifests


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `geosane collect`."""
    parser = subparsers.add_parser(
        "collect",
        help="collect the checkpoints of a manifest into a folder of safetensors",
        description="Load every manifest entry safely, check it against its architecture, reject NaN/Inf, dedupe by "
        "content, and store models/<id>.safetensors + collection.jsonl in --out. Failing entries are reported and "
        "skipped; a second run reuses what is already collected. Exit code 0 when at least one model is collected.",
    )
    parser.add_argument(
        "manifest",
        nargs="?",
        default=None,
        help=f"manifest YAML, or a bundled one by name ({', '.join(sorted(bundled_manifests()))}); optional with --zoo",
    )
    parser.add_argument("--out", required=True, help="collection folder (created if needed)")
    parser.add_argument(
        "--zoo",
        action="append",
        default=[],
        metavar="DIR",
        help="also collect a population trained by `geosane zoo train --out DIR` (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Collects, prints the report table, returns 0 when at least one model is in the collection."""
    from geosane_hf.collection.collector import collect
    from geosane_hf.collection.manifest import ManifestError, manifest_from_zoo

    if args.manifest is None and not args.zoo:
        raise ManifestError("expected a MANIFEST, --zoo DIR, or both; got neither.")
    from geosane_hf.collection.manifest import resolve_manifest

    manifest = resolve_manifest(args.manifest) if args.manifest is not None else None
    for zoo_dir in args.zoo:
        zoo = manifest_from_zoo(zoo_dir)
        manifest = zoo if manifest is None else manifest.merged(zoo, name=f"{manifest.name}+{zoo.name}")
    report = collect(manifest, args.out, progress=not args.no_progress)
    print(report.to_markdown())
    print(f"report written to {report.root / 'report.md'} and report.json; index: {report.root / 'collection.jsonl'}")
    if not report.collected:
        print(f"geosane collect: nothing collected ({len(report.failed)} entries failed, see above)", file=sys.stderr)
        return 1
    return 0
