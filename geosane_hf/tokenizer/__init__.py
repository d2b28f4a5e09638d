"""State_dict <-> tokens: the layout of tokenized weights, its planning from shapes, and :class:`WeightTokenizer`.

- :mod:`~geosane_hf.tokenizer.layout`: :class:`WeightLayout`, :class:`LayoutEntry`, :class:`StoredTensor`,
  :class:`TokenizedWeights` and the errors.
- :mod:`~geosane_hf.tokenizer.planning`: the ``geosane`` / ``full`` layout plans and the cached index tensors.
- :mod:`~geosane_hf.tokenizer.weight_tokenizer`: :class:`WeightTokenizer` (tokenize, detokenize, plan).
"""

from geosane_hf.layer_types import LayerType
from geosane_hf.tokenizer.layout import (
    FORMAT_VERSION,
    LayoutEntry,
    LayoutMismatchError,
    NonFiniteWeightsError,
    StoredTensor,
    TokenizedWeights,
    TokenizerError,
    WeightLayout,
    architecture_fingerprint,
)
from geosane_hf.tokenizer.weight_tokenizer import WeightTokenizer

__all__ = [
    "FORMAT_VERSION",
    "LayerType",
    "LayoutEntry",
    "LayoutMismatchError",
    "NonFiniteWeightsError",
    "StoredTensor",
    "TokenizedWeights",
    "TokenizerError",
    "WeightLayout",
    "WeightTokenizer",
    "architecture_fingerprint",
]
