"""A lazy state_dict for tokenizer tests: ``tensor_specs`` up front, a fresh tensor per ``__getitem__``."""

from __future__ import annotations

import weakref


class CountingLazyStateDict(dict):
    """A dict-like lazy mapping: `tensor_specs` up front, a fresh tensor per `__getitem__`, live tensors counted."""

    class Spec:
        def __init__(self, shape, dtype):
            self.shape, self.dtype = tuple(shape), dtype

    def __init__(self, source: dict):
        super().__init__(dict.fromkeys(source))
        self._source = source
        self.tensor_specs = {k: self.Spec(v.shape, v.dtype) for k, v in source.items()}
        self.live = weakref.WeakSet()
        self.max_live = 0
        self.reads = 0

    def __getitem__(self, key):
        tensor = self._source[key].clone()
        self.reads += 1  # CPython frees a dropped tensor at once: the WeakSet holds exactly the live ones
        self.live.add(tensor)
        self.max_live = max(self.max_live, len(self.live))
        return tensor

    def values(self):  # a lazy mapping must never be read whole
        raise AssertionError("values() read every tensor")

    def items(self):
        raise AssertionError("items() read every tensor")
