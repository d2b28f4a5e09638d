"""Safe checkpoint loading: any supported source -> an ordered state_dict plus metadata.

One module per format: :mod:`~geosane_hf.checkpoints.safetensors_io` (the header parser, the one lazy reader,
the atomic writer), :mod:`~geosane_hf.checkpoints.torch_io`, :mod:`~geosane_hf.checkpoints.onnx_io`,
:mod:`~geosane_hf.checkpoints.npz_io`, :mod:`~geosane_hf.checkpoints.timm_io`; where files come from (the Hub,
folders, sharded indexes) in :mod:`~geosane_hf.checkpoints.sources`; the shared types in
:mod:`~geosane_hf.checkpoints.base`; :func:`load_checkpoint` in :mod:`~geosane_hf.checkpoints.loading`.

Nothing here unpickles arbitrary objects: safetensors are parsed from their header, PyTorch files go through
`torch.load(weights_only=True)` only, ONNX initializers through `onnx.numpy_helper`, `.npz` through
`numpy.load(allow_pickle=False)`.

>>> import torch, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "tiny.safetensors")
>>> save_safetensors({"b.weight": torch.ones(2, 3), "a.bias": torch.zeros(2)}, path)
>>> ckpt = load_checkpoint(path)
>>> list(ckpt.state_dict), ckpt.state_dict.tensor_specs["b.weight"].shape, ckpt.metadata.num_parameters
(['b.weight', 'a.bias'], (2, 3), 8)
"""

from geosane_hf.checkpoints.base import (
    KEY_ORDER_METADATA_KEY,
    PREFERRED_FILENAMES,
    SHA256_MAX_BYTES,
    CheckpointError,
    CheckpointFormat,
    CheckpointMetadata,
    CheckpointNotFoundError,
    LoadedCheckpoint,
    TensorSpec,
)
from geosane_hf.checkpoints.loading import load_checkpoint
from geosane_hf.checkpoints.onnx_io import onnx_parameter_name
from geosane_hf.checkpoints.safetensors_io import (
    LazySafetensorsStateDict,
    SafetensorsHeader,
    open_safetensors,
    read_safetensors_header,
    save_safetensors,
)

__all__ = [
    "KEY_ORDER_METADATA_KEY",
    "PREFERRED_FILENAMES",
    "SHA256_MAX_BYTES",
    "CheckpointError",
    "CheckpointFormat",
    "CheckpointMetadata",
    "CheckpointNotFoundError",
    "LazySafetensorsStateDict",
    "LoadedCheckpoint",
    "SafetensorsHeader",
    "TensorSpec",
    "load_checkpoint",
    "onnx_parameter_name",
    "open_safetensors",
    "read_safetensors_header",
    "save_safetensors",
]
