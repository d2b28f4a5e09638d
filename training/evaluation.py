"""Held-out reconstruction quality during training: token-space R^2 and R^2 of the detokenized weights per layer
type, reduced over processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EvalResult:
    """Held-out reconstruction quality.

    Attributes:
        r2_tokens: mean over held-out models of the token-space R^2 (real values only).
        r2_tokens_pooled: R^2 over all held-out values together.
        r2_weights_by_type: R^2 of the detokenized weights per LayerType name (pooled over models).
        num_models: held-out models evaluated.
    """

    r2_tokens: float
    r2_tokens_pooled: float
    r2_weights_by_type: dict[str, float]
    num_models: int


@torch.no_grad()
def evaluate(model, models, accelerator, batch_size: int) -> EvalResult | None:
    """Reconstruction R^2 on held-out models: in token space and of the detokenized weights per layer type.

    Held-out models are split across processes; the sums are reduced, so every process gets the same result.
    """
    from geosane_hf.layer_types import LayerType
    from geosane_hf.token_norm import destandardize
    from geosane_hf.tokenizer import WeightTokenizer

    if not models:
        return None
    num_types = len(LayerType)
    # per type t: [sse, sum_x, sum_x2, n]; then [r2 sum over models, model count, pooled sse, sum_x, sum_x2, n]
    sums = torch.zeros(num_types * 4 + 6, dtype=torch.float64, device=accelerator.device)
    was_training = model.training
    model.eval()
    use_types = model.config.num_layer_types > 0
    for source in models[accelerator.process_index :: accelerator.num_processes]:
        tok = source.tokenized
        device = accelerator.device
        tokens, mask = tok.tokens.to(device), tok.mask.to(device)  # [N, T]
        positions = tok.positions.to(device)  # [N, 3]
        layer_types = tok.layer_types.to(device) if use_types else None  # [N]
        latents = model.encode_long(tokens, positions, mask, layer_types, batch_size=batch_size)  # [N, L]
        recon = model.decode_long(latents, positions, layer_types, mask.any(-1), batch_size=batch_size)  # [N, T]
        recon = torch.where(mask, recon.float(), 0.0)
        x = tokens.double()[mask]
        err = (recon.double()[mask] - x).pow(2).sum()
        sst = (x - x.mean()).pow(2).sum()
        sums[-6] += 1.0 - err / sst.clamp_min(1e-30)
        sums[-5] += 1
        sums[-4:] += torch.stack([err, x.sum(), x.pow(2).sum(), torch.tensor(float(x.numel()), device=device)])
        # weights put back into the model, per layer type of the tokenized tensors (in weight units: standardised
        # tokens are mapped back with the model's own per-layer statistics, as generation does with the prompt's)
        tokenizer = WeightTokenizer(token_size=tok.tokens.shape[1], mode=tok.layout.mode)
        original_tokens, rebuilt_tokens = tok.tokens, recon.cpu()
        if source.stats is not None:
            original_tokens = destandardize(original_tokens, tok.mask, source.stats)
            rebuilt_tokens = destandardize(rebuilt_tokens, tok.mask, source.stats)
        original = tokenizer.detokenize(original_tokens, tok.layout)
        rebuilt = tokenizer.detokenize(rebuilt_tokens, tok.layout)
        for entry in tok.layout.entries:
            for key in (entry.key, entry.bias_key):
                if key is None:
                    continue
                a, b = original[key].double().flatten(), rebuilt[key].double().flatten()
                row = entry.layer_type * 4
                stats = torch.stack([(b - a).pow(2).sum(), a.sum(), a.pow(2).sum(), torch.tensor(float(a.numel()))])
                sums[row : row + 4] += stats.to(device)
    sums = accelerator.reduce(sums, reduction="sum")
    if was_training:
        model.train()

    def r2(sse, sx, sx2, n) -> float:
        sst = sx2 - sx * sx / n
        return float(1.0 - sse / sst) if n > 0 and sst > 0 else float("nan")

    by_type = {}
    for t in LayerType:
        sse, sx, sx2, n = sums[t * 4 : t * 4 + 4].tolist()
        if n > 0:
            by_type[t.name] = r2(sse, sx, sx2, n)
    r2_sum, count = sums[-6].item(), sums[-5].item()
    return EvalResult(
        r2_tokens=r2_sum / max(count, 1),
        r2_tokens_pooled=r2(*sums[-4:].tolist()),
        r2_weights_by_type=by_type,
        num_models=int(count),
    )
