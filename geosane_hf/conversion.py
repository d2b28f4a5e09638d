"""Convert an original GeoSANE/SANE autoencoder checkpoint into a ``save_pretrained`` folder.

The original trainer saves ``state.pt`` = ``{"model": state_dict, "optimizer": ..., "scheduler": ...}`` (keys may
carry torch.compile's ``_orig_mod.`` or DDP's ``module.`` prefix) next to a ``params.json`` of string keys
(``ae:d_model``, ``ae:nhead``, ...). Parameter names map 1:1 onto :class:`GeoSANEModel`; the only rename is that
the sinusoid buffer ``pe.div_term`` is dropped (it is recomputed, and checked against ours before dropping).

Example:

>>> from geosane_hf.conversion import convert_original  # doctest: +SKIP
>>> result = convert_original("run/state.pt", "geosane-909m", params_path="run/params.json")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from geosane_hf.errors import GeoSANEError
from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel

STRIPPED_PREFIXES = ("_orig_mod.", "module.")
DROPPED_KEYS = ("pe.div_term",)
_MAX_LISTED = 25


class ConversionError(GeoSANEError, ValueError):
    """An original checkpoint or params.json that cannot be converted (the message says why and what to do)."""


@dataclass
class ConversionResult:
    """What :func:`convert_original` wrote.

    Args:
        output_dir: the ``save_pretrained`` folder.
        config: the configuration of the converted model.
        num_parameters: parameters in the converted model.
        dropped_keys: original keys that were verified and dropped (``pe.div_term``).
    """

    output_dir: Path
    config: GeoSANEConfig
    num_parameters: int
    dropped_keys: list[str] = field(default_factory=list)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Removes leading ``_orig_mod.`` / ``module.`` segments (torch.compile, DDP) from every key."""
    stripped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key
        while name.startswith(STRIPPED_PREFIXES):
            name = name.split(".", 1)[1]
        if name in stripped:
            raise ConversionError(f"checkpoint has the key {name!r} twice once prefixes are removed (from {key!r}).")
        stripped[name] = value
    return stripped


def load_original_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads the model state_dict of an original ``state.pt`` without unpickling arbitrary objects.

    Accepts ``{"model": state_dict, ...}`` or a bare state_dict; strips ``_orig_mod.``/``module.`` prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"original checkpoint not found: expected a state.pt file, got {str(path)!r}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ConversionError(
            f"could not read {str(path)!r} with torch.load(weights_only=True): {error}. Only tensors and plain "
            "containers are accepted (arbitrary pickled objects are never loaded); re-save the state with "
            "`torch.save({'model': model.state_dict()}, path)`."
        ) from error
    if isinstance(payload, Mapping) and "model" in payload and isinstance(payload["model"], Mapping):
        payload = payload["model"]
    if not isinstance(payload, Mapping) or not payload:
        raise ConversionError(
            f"expected {str(path)!r} to hold {{'model': state_dict, ...}} or a state_dict, got "
            f"{type(payload).__name__}."
        )
    not_tensors = [str(key) for key, value in payload.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ConversionError(
            f"expected only tensors in the model state_dict, got other values for: {_listing(not_tensors)}."
        )
    return strip_prefixes(payload)


def _block_count(state_dict: Mapping[str, torch.Tensor], stack: str) -> int:
    prefix = f"{stack}.transformer."
    indices = {int(key[len(prefix) :].split(".", 1)[0]) for key in state_dict if key.startswith(prefix)}
    if indices and indices != set(range(len(indices))):
        raise ConversionError(f"{stack}: expected blocks numbered 0..{len(indices) - 1}, got {sorted(indices)}.")
    return len(indices)


def _require(state_dict: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ConversionError(
            f"missing key {key!r}: this does not look like a GeoSANE/SANE autoencoder state_dict (keys start with: "
            f"{_listing(sorted(state_dict)[:5])})."
        )
    return state_dict[key]


def infer_config_kwargs(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Reads every size that the tensor shapes determine (all but the head count)."""
    tokenizer = _require(state_dict, "tokenizer.weight")  # [d, T]
    hidden, token_size = tokenizer.shape
    latent = _require(state_dict, "encoder_comp.weight").shape[0]
    head_in = _require(state_dict, "projection_head.head.0.weight")  # [P1, window * L]
    if head_in.shape[1] % latent:
        raise ConversionError(
            f"projection_head.head.0.weight has {head_in.shape[1]} inputs, expected a multiple of the latent size "
            f"{latent} (window * latent)."
        )
    block = "transformer_encoder.transformer.0."
    kwargs: dict[str, Any] = {
        "token_size": int(token_size),
        "hidden_size": int(hidden),
        "latent_size": int(latent),
        "num_encoder_layers": _block_count(state_dict, "transformer_encoder"),
        "num_decoder_layers": _block_count(state_dict, "transformer_decoder"),
        "window_size": int(head_in.shape[1] // latent),
        "projection_hidden_size": int(head_in.shape[0]),
        "projection_size": int(_require(state_dict, "projection_head.head.3.weight").shape[0]),
        "io_bias": "tokenizer.bias" in state_dict,
        "attention_bias": f"{block}attn.c_attn.bias" in state_dict,
        "mlp_bias": f"{block}mlp.c_fc.bias" in state_dict,
        "layer_norm_bias": f"{block}ln_1.bias" in state_dict,
    }
    if f"{block}mlp.c_fc.weight" in state_dict:
        kwargs["intermediate_size"] = int(state_dict[f"{block}mlp.c_fc.weight"].shape[0])
    kwargs["halo_size"] = max(kwargs["window_size"] // 8, 0)
    if "pe.pe1.weight" in state_dict:
        kwargs["position_encoding"] = "learned"
        kwargs["max_position_embeddings"] = [int(_require(state_dict, f"pe.pe{i}.weight").shape[0]) for i in (1, 2, 3)]
    else:
        # OptimizedSinusoidalPositionEmbeddings (buffer `div_term`) sums in float16, the functional variant in fp32
        kwargs["position_encoding"] = "sinusoidal-3d"
        kwargs["position_sum_dtype"] = "float16" if "pe.div_term" in state_dict else "float32"
    if "layer_type_embs.embedding.weight" in state_dict:
        kwargs["num_layer_types"] = int(state_dict["layer_type_embs.embedding.weight"].shape[0])
    return kwargs


def config_kwargs_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Maps the original ``params.json`` keys onto GeoSANEConfig fields (only keys that are present)."""
    transformer_type = params.get("ae:transformer_type", "pytorch")
    if transformer_type != "gpt2":
        raise ConversionError(
            f"params.json: expected ae:transformer_type 'gpt2' (pre-LN GPT-2 blocks), got {transformer_type!r}; "
            "the nn.TransformerEncoder variant is not supported."
        )
    for flag in ("ae:decoder:use_hidden_layer", "ae:decoder:use_skip_connection", "ae:use_layer_embs_enc_only"):
        if params.get(flag):
            raise ConversionError(f"params.json: {flag}=true is not supported by GeoSANEModel.")
    mapping = {
        "ae:i_dim": "token_size",
        "ae:d_model": "hidden_size",
        "ae:nhead": "num_attention_heads",
        "ae:lat_dim": "latent_size",
        "training::windowsize": "window_size",
    }
    kwargs: dict[str, Any] = {field: int(params[key]) for key, field in mapping.items() if key in params}
    if "ae:num_layers" in params:
        kwargs["num_encoder_layers"] = kwargs["num_decoder_layers"] = int(params["ae:num_layers"])
    if "ae:dropout" in params:
        kwargs["hidden_dropout"] = kwargs["attention_dropout"] = float(params["ae:dropout"])
    position_type = params.get("ae:pos_emb_type")
    if position_type == "functional":
        kwargs["position_encoding"] = "sinusoidal-3d"
    elif position_type == "quantized":
        raise ConversionError("params.json: ae:pos_emb_type 'quantized' is not supported by GeoSANEModel.")
    elif params.get("ae:use_relative_pos"):
        raise ConversionError("params.json: ae:use_relative_pos=true is not supported by GeoSANEModel.")
    else:
        kwargs["position_encoding"] = "learned"
        if "ae:max_positions" in params:
            kwargs["max_position_embeddings"] = [int(size) for size in params["ae:max_positions"]]
    if params.get("ae:use_layer_embs"):
        kwargs["num_layer_types"] = int(params.get("ae:num_unique_layer_types", 9))
    return kwargs


def build_config(
    state_dict: Mapping[str, torch.Tensor], params: Mapping[str, Any] | None = None, num_heads: int | None = None
) -> GeoSANEConfig:
    """Config from the shapes, cross-checked against params.json; the head count from params or ``num_heads``."""
    kwargs = infer_config_kwargs(state_dict)
    if params is not None:
        declared = config_kwargs_from_params(params)
        conflicts = [
            f"{name}: params.json says {value!r}, the weights say {kwargs[name]!r}"
            for name, value in declared.items()
            if name in kwargs and name not in ("position_sum_dtype",) and kwargs[name] != value
        ]
        if conflicts:
            raise ConversionError("params.json disagrees with the checkpoint: " + "; ".join(conflicts) + ".")
        kwargs.update({name: value for name, value in declared.items() if name not in kwargs})
    if num_heads is not None:
        if "num_attention_heads" in kwargs and kwargs["num_attention_heads"] != num_heads:
            raise ConversionError(
                f"--num-heads {num_heads} contradicts params.json ae:nhead={kwargs['num_attention_heads']}."
            )
        kwargs["num_attention_heads"] = int(num_heads)
    if "num_attention_heads" not in kwargs:
        hidden = kwargs["hidden_size"]
        candidates = [h for h in (4, 6, 8, 12, 16, 24, 32) if hidden % h == 0]
        raise ConversionError(
            f"the number of attention heads cannot be read from the weights (d_model={hidden}); pass --num-heads "
            f"(divisors of d_model: {candidates}) or --params with ae:nhead."
        )
    return GeoSANEConfig(**kwargs)


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], config: GeoSANEConfig) -> dict[str, torch.Tensor]:
    """Checks names and shapes against GeoSANEModel(config) and returns the converted state_dict.

    Raises:
        ConversionError: listing unexpected keys, missing keys and shape mismatches.
    """
    state = dict(state_dict)
    with torch.device("meta"):
        reference = GeoSANEModel(config).state_dict()
    if "pe.div_term" in state:
        with torch.device("meta"):
            frequencies = GeoSANEModel(config).pe
        expected = frequencies.frequencies(torch.device("cpu"))
        found = state["pe.div_term"].float()
        if found.shape != expected.shape or not torch.allclose(found, expected, rtol=1e-6, atol=0.0):
            raise ConversionError(
                f"pe.div_term does not match exp(arange(0, d, 2) * -ln(10000) / d) for d={config.hidden_size} "
                f"(shape {tuple(found.shape)}); this checkpoint uses a different position code."
            )
    for key in DROPPED_KEYS:
        state.pop(key, None)
    unexpected = sorted(set(state) - set(reference))
    missing = sorted(set(reference) - set(state))
    mismatched = [
        f"{key}: expected {tuple(reference[key].shape)}, got {tuple(state[key].shape)}"
        for key in reference
        if key in state and tuple(state[key].shape) != tuple(reference[key].shape)
    ]
    problems = []
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
    if problems:
        raise ConversionError("the checkpoint does not match GeoSANEModel(config): " + "; ".join(problems) + ".")
    return {key: state[key] for key in reference}  # the model's order


def _write_atomically(model: GeoSANEModel, output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"output folder {str(output_dir)!r} exists and is not empty; pass --overwrite.")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(staging)
        if output_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old.", dir=output_dir.parent))
            os.replace(output_dir, backup / "old")
            os.replace(staging, output_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def convert_original(
    state_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    params_path: str | os.PathLike | None = None,
    num_heads: int | None = None,
    overwrite: bool = False,
) -> ConversionResult:
    """Converts an original ``state.pt`` (+ optional ``params.json``) into a ``save_pretrained`` folder.

    The folder holds ``config.json`` (with ``auto_map``), ``model.safetensors`` and the two modeling files, so it
    loads with ``AutoModel.from_pretrained(folder, trust_remote_code=True)``.

    Args:
        state_path: the original ``state.pt``.
        output_dir: folder to write (must be empty or absent unless ``overwrite``).
        params_path: the original ``params.json``; without it sizes are read from the shapes.
        num_heads: attention heads (needed when ``params.json`` is absent).
        overwrite: replace an existing folder.

    Returns:
        A :class:`ConversionResult`.

    Example:

    >>> convert_original("state.pt", "out", num_heads=16)  # doctest: +SKIP
    """
    state_dict = load_original_state_dict(state_path)
    params = None
    if params_path is not None:
        params_path = Path(params_path)
        if not params_path.is_file():
            raise FileNotFoundError(f"params.json not found: got {str(params_path)!r}.")
        try:
            params = json.loads(params_path.read_text())
        except json.JSONDecodeError as error:
            raise ConversionError(f"could not parse {str(params_path)!r} as JSON: {error}.") from error
        if not isinstance(params, Mapping):
            raise ConversionError(f"expected a JSON object in {str(params_path)!r}, got {type(params).__name__}.")
    config = build_config(state_dict, params, num_heads)
    converted = convert_state_dict(state_dict, config)
    dtypes = {tensor.dtype for tensor in converted.values()}
    if len(dtypes) > 1:
        raise ConversionError(f"expected one floating dtype across the checkpoint, got {sorted(map(str, dtypes))}.")
    with torch.device("meta"):
        model = GeoSANEModel(config)
    model.load_state_dict(converted, strict=True, assign=True)
    model.eval()
    output_dir = Path(output_dir)
    _write_atomically(model, output_dir, overwrite)
    dropped = [key for key in DROPPED_KEYS if key in state_dict]
    return ConversionResult(
        output_dir=output_dir,
        config=config,
        num_parameters=sum(tensor.numel() for tensor in converted.values()),
        dropped_keys=dropped,
    )


__all__ = [
    "ConversionError",
    "ConversionResult",
    "build_config",
    "config_kwargs_from_params",
    "convert_original",
    "convert_state_dict",
    "infer_config_kwargs",
    "load_original_state_dict",
    "strip_prefixes",
]
