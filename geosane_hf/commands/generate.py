"""``geosane generate``: generate weights for a timm architecture, save them as a timm repo, optionally push.

Example:
    geosane generate --prompt swin_base_patch4_window7_224 --in-chans 4 --num-classes 6 --sampler bootstrap \\
        --model PATH_OR_ID --out DIR [--push-to-hub org/name] [--overwrite] [--seed 0]
"""

from __future__ import annotations

import argparse
import re

from geosane_hf.generation.registry import DEFAULT_SAMPLER, SAMPLER_NAMES


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None


def _positive(text: str) -> int:
    value = _seed(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _license(text: str) -> str:
    """A license id for the card's YAML front matter (``apache-2.0``, ``mit``, ``cc-by-4.0``, ``other`` ...)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}", text):
        raise argparse.ArgumentTypeError(
            f"expected a license id such as apache-2.0, mit, cc-by-4.0 or other (letters, digits, '.', '+', '-'; no "
            f"spaces or newlines: it goes into the card's YAML front matter), got {text!r}"
        )
    return text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate weights for a timm architecture with a GeoSANE model")
    parser.add_argument("--prompt", required=True, help="timm name, local checkpoint or Hub id of the prompt")
    parser.add_argument("--model", required=True, help="GeoSANE model: local folder or Hub id")
    parser.add_argument("--out", required=True, help="output folder (a timm repo); must not exist unless --overwrite")
    parser.add_argument("--in-chans", type=_positive, default=None, help="target bands (default: the prompt's)")
    parser.add_argument("--num-classes", type=int, default=None, help="target classes (default: the prompt's)")
    parser.add_argument(
        "--bands", default=None, help="comma-separated band names, e.g. B2,B3,B4,B5 with --sensor L8, or S2:B8"
    )
    parser.add_argument("--sensor", default=None, help="sensor of unqualified band names: L8, S2 or S1")
    parser.add_argument(
        "--sampler",
        default=DEFAULT_SAMPLER,
        choices=SAMPLER_NAMES,
        help=f"a registered sampler (default {DEFAULT_SAMPLER}: between the prompt and same-architecture collection "
        "members, decoded residually around the prompt)",
    )
    parser.add_argument("--collection", default=None, help="collector output folder (anchors for kde/bootstrap)")
    parser.add_argument("--seed", type=_seed, default=0, help="integer seed (same seed: identical weights)")
    parser.add_argument(
        "--noise-scale",
        type=float,
        default=None,
        help="latent noise relative to the latent std (default: the sampler's: 0.1, or 0 for interpolate)",
    )
    parser.add_argument("--candidates", type=_positive, default=8, help="bootstrap candidates per round")
    parser.add_argument("--keep", type=_positive, default=2, help="bootstrap: best candidates kept per round")
    parser.add_argument("--rounds", type=_positive, default=2, help="bootstrap rounds")
    parser.add_argument("--tokenizer-mode", default="full", choices=("full", "geosane"))
    parser.add_argument("--architecture", default=None, help="timm architecture of a checkpoint prompt")
    parser.add_argument("--no-calibrate", action="store_true", help="skip BatchNorm calibration")
    parser.add_argument("--revision", default=None, help="revision of the GeoSANE model on the Hub")
    parser.add_argument("--push-to-hub", default=None, metavar="ORG/NAME", help="publish the result to this repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument(
        "--license", type=_license, default="other", help="license declared in the card (a Hub licence id)"
    )
    parser.add_argument("--license-name", default=None, help="with --license other: a short licence id")
    parser.add_argument("--license-link", default=None, help="with --license other: URL or file (default LICENSE.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from geosane_hf.hub import OutputExistsError

    out = Path(args.out)
    if out.exists() and not args.overwrite:  # checked before any work
        raise OutputExistsError(f"expected a new output folder, got existing {out}; pass --overwrite to replace it")

    from geosane_hf.generation import GeoSANEPipeline
    from geosane_hf.generation.registry import get_sampler_class
    from geosane_hf.hub import publish_folder

    sampler_class = get_sampler_class(args.sampler)
    options = {"candidates": args.candidates, "keep": args.keep, "rounds": args.rounds}
    if args.noise_scale is not None:  # else the sampler's own default
        options["noise_scale"] = args.noise_scale
    pipe = GeoSANEPipeline.from_pretrained(
        args.model,
        sampler_class.from_config(options),
        revision=args.revision,
        tokenizer_mode=args.tokenizer_mode,
        collection=args.collection,
    )
    output = pipe(
        args.prompt,
        in_chans=args.in_chans,
        num_classes=args.num_classes,
        bands=[b.strip() for b in args.bands.split(",") if b.strip()] if args.bands else None,
        sensor=args.sensor,
        architecture=args.architecture,
        seed=args.seed,
        calibrate=not args.no_calibrate,
        model_id=args.model,
        revision=args.revision,
        show_progress=True,
    )
    path = output.save_pretrained(
        out,
        overwrite=args.overwrite,
        repo_id=args.push_to_hub,
        license=args.license,
        license_name=args.license_name,
        license_link=args.license_link,
        extra={"collection": args.collection} if args.collection else None,
    )
    provenance = output.provenance
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in output.timings.items())
    print(
        f"wrote {path} ({provenance['architecture']}, {provenance['in_chans']} bands, sampler {args.sampler}): {timings}"
    )
    if args.push_to_hub:
        url = publish_folder(path, args.push_to_hub, private=args.private)
        print(f"pushed {args.push_to_hub}: {url}")
    return 0
