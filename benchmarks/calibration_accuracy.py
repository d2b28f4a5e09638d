"""How accurate (and how fast) BatchNorm calibration is with fewer / smaller patches or in channels_last.

``generate_weights`` re-estimates BatchNorm statistics on 16 packaged-scene patches of 224 x 224 (4 bands, B2-B5),
which costs 16 forward passes of the target. This script measures what cheaper settings would give up: each
architecture's prompt (packaged ImageNet weights, band-adapted to 4 bands) is calibrated on a large reference
(``--reference`` patches of 224 x 224) and on each candidate setting; reported per candidate: process CPU seconds of
the calibration, the per-layer median / max over layers of ``|mean - mean_ref| / std_ref`` and of
``|log var - log var_ref|`` (medians over channels), and the relative L2 difference and mean cosine similarity of
the pre-logits features on held-out patches against the reference-calibrated model. Two seeds of the default show
its own sampling noise; the ``channels_last`` row the same patches in another memory format.

Usage:
    python benchmarks/calibration_accuracy.py                         # mobilenetv2_100, resnet50
    python benchmarks/calibration_accuracy.py --models resnet18 --reference 64
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
from torch import nn

from geosane_hf.generation.api import load_prompt
from geosane_hf.generation.bands import default_bands
from geosane_hf.generation.calibration import batchnorm_layers, calibrate_batchnorm
from geosane_hf.generation.data import calibration_images

# (patches, patch size, seed, channels_last)
CANDIDATES = [
    (16, 224, 0, False),  # the default
    (16, 224, 1, False),  # the default, other patches: its own sampling noise
    (16, 224, 0, True),
    (8, 224, 0, False),
    (4, 224, 0, False),
    (32, 160, 0, False),
    (16, 160, 0, False),
    (32, 112, 0, False),
    (64, 112, 0, False),
    (64, 224, 0, False),
]


def features(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.forward_head(net.forward_features(images), pre_logits=True)  # [M, D]


def compare(net: nn.Module, ref: nn.Module, held_out: torch.Tensor, ref_features: torch.Tensor) -> dict[str, float]:
    mean_err, var_err = [], []
    for a, b in zip(batchnorm_layers(net), batchnorm_layers(ref), strict=True):
        std = (b.running_var + b.eps).sqrt()
        mean_err.append(((a.running_mean - b.running_mean).abs() / std).median())
        var_err.append(((a.running_var + a.eps).log() - (b.running_var + b.eps).log()).abs().median())
    f = features(net, held_out)
    mean_err_t, var_err_t = torch.stack(mean_err), torch.stack(var_err)
    return {
        "mean_med": mean_err_t.median().item(),
        "mean_max": mean_err_t.max().item(),
        "var_med": var_err_t.median().item(),
        "var_max": var_err_t.max().item(),
        "feature_rel": ((f - ref_features).norm() / ref_features.norm()).item(),
        "cosine": torch.nn.functional.cosine_similarity(f, ref_features, dim=1).mean().item(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_100", "resnet50"], help="timm architectures")
    parser.add_argument("--reference", type=int, default=128, help="patches of the reference calibration")
    parser.add_argument("--held-out", type=int, default=32, help="held-out patches for the feature comparison")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bands = tuple(default_bands(4))
    print(f"{torch.get_num_threads()} thread(s), bands {bands}, load {os.getloadavg()[0]:.1f}")
    for arch in args.models:
        fitted, target = load_prompt(arch, in_chans=4, num_classes=6)
        target.load_state_dict(fitted.state_dict)
        target.eval()
        ref = copy.deepcopy(target)
        calibrate_batchnorm(ref, calibration_images(bands, 224, args.reference, seed=100).images)
        held_out = calibration_images(bands, 224, args.held_out, seed=7).images
        ref_features = features(ref, held_out)
        print(f"\n{arch}: reference {args.reference} patches of 224; held-out {args.held_out} patches of 224")
        print(
            "| patches | size | seed | channels_last | CPU s | mean err med / max (ref std) | "
            "abs log var ratio med / max | feature rel. L2 | cosine |"
        )
        print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
        for count, size, seed, channels_last in CANDIDATES:
            net = copy.deepcopy(target)
            images = calibration_images(bands, size, count, seed=seed).images
            start = time.process_time()
            calibrate_batchnorm(net, images, channels_last=channels_last)
            seconds = time.process_time() - start
            r = compare(net, ref, held_out, ref_features)
            print(
                f"| {count} | {size} | {seed} | {channels_last} | {seconds:.2f} | {r['mean_med']:.4f} / "
                f"{r['mean_max']:.3f} | {r['var_med']:.4f} / {r['var_max']:.3f} | {r['feature_rel']:.4f} | "
                f"{r['cosine']:.4f} |",
                flush=True,
            )
    print(f"\nload after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
