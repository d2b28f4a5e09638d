"""``geosane embed``: per-model embeddings of a collection and their UMAP picture.

Writes ``OUT/embeddings.safetensors`` (mean-pooled latents, one row per model, labels as metadata) and
``OUT/latent_umap.png`` (two panels: coloured by architecture and by modality). ``--generated DIR`` places a
generated model repo (``model.safetensors``, from ``geosane generate``) in the same picture as a star.

Without ``--model`` an untrained tiny GeoSANE is used and the figure title says so.

Example:
    $ geosane embed runs/collection --model runs/small/model --out runs/embed
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="Embed every model of a collection with GeoSANE and draw the UMAP picture.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("collection", help="collector output folder (collection.jsonl + models/)")
    parser.add_argument("--model", default=None, help="GeoSANE model folder (default: untrained tiny model)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--generated", action="append", default=[], help="generated model repo folder (repeatable)")
    parser.add_argument("--method", choices=("umap", "pca"), default="umap", help="projection (default umap)")
    parser.add_argument("--seed", type=int, default=0, help="projection seed")
    parser.add_argument("--png-name", default="latent_umap.png", help="file name of the figure")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geosane_hf.embedding import load_geosane, write_latent_view

    model, label = load_geosane(args.model)
    view = write_latent_view(
        model,
        args.collection,
        args.out,
        label=label,
        generated=args.generated,
        method=args.method,
        seed=args.seed,
        png_name=args.png_name,
        progress=not args.no_progress,
    )
    print(f"embeddings: {view.embeddings} ({view.num_models} x {view.dim})")
    print(
        f"figure: {view.figure} ({view.projection.method}{'; ' + view.projection.note if view.projection.note else ''})"
    )
    return 0
