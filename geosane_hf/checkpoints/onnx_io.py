"""ONNX initializers as a state_dict, with PyTorch-style parameter names recovered from the graph."""

from __future__ import annotations

import re
from typing import Any

import torch

from geosane_hf.checkpoints.base import CheckpointError

# ----------------------------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------------------------

# For operators whose inputs are parameters: input index -> parameter suffix (PyTorch's names where they exist).
_ONNX_SLOTS: dict[str, dict[int, str]] = {
    "Conv": {1: "weight", 2: "bias"},
    "ConvTranspose": {1: "weight", 2: "bias"},
    "Gemm": {1: "weight", 2: "bias"},
    "MatMul": {0: "weight", 1: "weight"},
    "Add": {0: "bias", 1: "bias"},
    "Mul": {0: "weight", 1: "weight"},
    "BatchNormalization": {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"},
    "InstanceNormalization": {1: "weight", 2: "bias"},
    "LayerNormalization": {1: "weight", 2: "bias"},
    "GroupNormalization": {1: "weight", 2: "bias"},
    "PRelu": {1: "weight"},
    "Gather": {0: "weight"},
    "LSTM": {1: "weight_ih", 2: "weight_hh", 3: "bias"},
    "GRU": {1: "weight_ih", 2: "weight_hh", 3: "bias"},
    "RNN": {1: "weight_ih", 2: "weight_hh", 3: "bias"},
}
_PARAM_LIKE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_SEGMENT_BAD = re.compile(r"[^A-Za-z0-9_.]")


def _onnx_node_path(node_name: str, op_type: str) -> str:
    """`/model/decoder/blocks.4/conv1/conv1.0/Conv` -> `model.decoder.blocks.4.conv1.0` (PyTorch exporter scopes)."""
    segments = [s for s in node_name.split("/") if s]
    if len(segments) > 1 and re.fullmatch(rf"{re.escape(op_type)}(_\d+)?", segments[-1]):
        segments = segments[:-1]
    merged: list[str] = []
    for seg in segments:
        if merged and seg.startswith(merged[-1] + "."):  # a child scope repeats its parent: conv1/conv1.0
            merged[-1] = seg
        else:
            merged.append(seg)
    return ".".join(_SEGMENT_BAD.sub("_", s).strip(".") or "_" for s in merged)


def onnx_parameter_name(initializer: str, node_name: str, op_type: str, input_index: int, node_index: int) -> str:
    """The parameter name given to an ONNX initializer.

    Names that already look like PyTorch parameter names (dotted identifiers, e.g. `model.encoder._bn0.weight`,
    which is what the PyTorch exporter keeps for module parameters) are kept. Others (`onnx::Conv_512`,
    `/enc/Constant_output_0`, TensorFlow-style paths) are derived from the first node that consumes them: the
    node's scope path with dots plus a suffix by operator and input index (`Conv` input 1 -> `weight`,
    input 2 -> `bias`; `BatchNormalization` 1-4 -> `weight`, `bias`, `running_mean`, `running_var`; `Gemm`,
    `MatMul`, `Add` ... see `_ONNX_SLOTS`; otherwise `<op>_<index>`).

    >>> onnx_parameter_name("onnx::Conv_7", "/encoder/conv_stem/Conv", "Conv", 1, 0)
    'encoder.conv_stem.weight'
    >>> onnx_parameter_name("model.head.bias", "/model/head/Gemm", "Gemm", 2, 9)
    'model.head.bias'
    """
    if _PARAM_LIKE.fullmatch(initializer):
        return initializer
    path = _onnx_node_path(node_name, op_type) if node_name else ""
    if not path:
        path = f"{op_type.lower()}_{node_index}"
    suffix = _ONNX_SLOTS.get(op_type, {}).get(input_index, f"{op_type.lower()}_{input_index}")
    return f"{path}.{suffix}"


def _onnx_array_to_tensor(array: Any) -> torch.Tensor | None:
    import numpy as np

    name = array.dtype.name
    if name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16)).view(torch.bfloat16)
    if name in ("float8_e4m3fn", "float8_e5m2"):
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint8)).view(getattr(torch, name))
    if array.dtype.kind not in "biufc":
        return None
    return torch.from_numpy(np.array(array, copy=True))


def _load_onnx(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise CheckpointError(
            f"Loading {path} needs the `onnx` package, a core dependency of geosane-hf missing from this "
            "environment: `pip install 'onnx>=1.17'`."
        ) from e
    try:
        model = onnx.load(path, load_external_data=True)
    except Exception as e:  # protobuf DecodeError, missing external data ...
        raise CheckpointError(
            f"Could not read {path} as an ONNX model ({type(e).__name__}: {e}); the file is probably truncated or "
            "corrupt: re-download or re-export it."
        ) from e
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    if not initializers:
        raise CheckpointError(f"{path}: the ONNX graph has no initializers (weights); nothing to load")

    # First consumer of each initializer, walking nodes in graph order (subgraphs of If/Loop included).
    first_use: dict[str, tuple[str, str, int, int]] = {}
    counter = 0

    def walk(g: Any) -> None:
        nonlocal counter
        for node in g.node:
            for i, inp in enumerate(node.input):
                if inp in initializers and inp not in first_use:
                    first_use[inp] = (node.name, node.op_type, i, counter)
            counter += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(graph)
    order = list(first_use) + [n for n in initializers if n not in first_use]

    tensors: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}  # new name -> original initializer name
    dropped: list[str] = []
    for original in order:
        tensor = _onnx_array_to_tensor(numpy_helper.to_array(initializers[original]))
        if tensor is None or not (tensor.is_floating_point() or tensor.is_complex()):
            dropped.append(original)  # shape/axes constants and other non-weights
            continue
        use = first_use.get(original)
        name = onnx_parameter_name(original, *use) if use else onnx_parameter_name(original, "", "Initializer", 0, 0)
        if not _PARAM_LIKE.fullmatch(name):
            name = _SEGMENT_BAD.sub("_", name)
        base, k = name, 1
        while name in tensors:
            name = f"{base}_{k}"
            k += 1
        tensors[name] = tensor
        names[name] = original
    if not tensors:
        raise CheckpointError(f"{path}: the ONNX graph has no floating-point initializers; nothing to load")
    extra: dict[str, Any] = {
        "onnx_names": names,
        "onnx_renamed": sum(1 for k, v in names.items() if k != v),
        "opset": {imp.domain or "ai.onnx": imp.version for imp in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
    if dropped:
        extra["dropped_non_float_initializers"] = dropped
    return tensors, extra
