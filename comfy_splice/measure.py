"""Measuring memory and giving it back: the tensor-peak tracker and the heap trim.

* :class:`TensorPeakTracker`: a device-independent measurement. It watches every tensor an op
  creates (a ``TorchDispatchMode``, so autograd's saved tensors and the backward pass are seen
  too), keeps a weak reference to each distinct storage, and records the largest sum of live
  storage bytes. That is what a GPU's caching allocator must at least provide, without its
  rounding, fragmentation or library workspaces. ``comfy_splice/memory.py``'s coefficients
  were fitted to it (``bench/bench_memory.py``).
* :func:`release_heap`: glibc keeps freed heap pages inside the process; ``malloc_trim(0)``
  hands them back to the system after a large run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

class TensorPeakTracker(TorchDispatchMode):
    """Peak bytes of live tensor storages created while the mode is active (plus a baseline).

    Every op's outputs are seen at the dispatcher, below autograd, so tensors that autograd
    saves for backward, the backward pass itself and checkpoint recomputation are all counted.
    Storages are identified by a weak reference, so views and in-place results are counted
    once and a storage stops counting when it is freed. ``baseline`` adds tensors that existed
    before (weights, input images): pass them to :meth:`add`. ``ignore(storage)`` leaves out
    storages that are not the device's, e.g. views of a streamed pass's RAM store
    (``RamStore.owns``), so that what is counted is the device part alone.
    """

    def __init__(self, ignore: Callable[[torch.UntypedStorage], bool] | None = None) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._ignore = ignore
        self.current = 0
        self.peak = 0

    def add(self, tensors: Iterable[Tensor]) -> None:
        """Count tensors created before the mode (they stay live as long as they exist)."""
        for tensor in tensors:
            self._track(tensor)

    def _track(self, tensor: Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._live and not self._live[key][0].expired():
            return
        if self._ignore is not None and self._ignore(storage):
            return
        size = storage.nbytes()
        self._live[key] = (StorageWeakRef(storage), size)
        self.current += size

    def _prune(self) -> None:
        dead = [k for k, (ref, _) in self._live.items() if ref.expired()]
        for key in dead:
            self.current -= self._live.pop(key)[1]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self._prune()
        for leaf in tree_leaves(out):
            if isinstance(leaf, Tensor) and leaf.device.type != "meta":
                self._track(leaf)
        self.peak = max(self.peak, self.current)
        return out

    def reset_peak(self) -> None:
        """Start a new peak from what is live now."""
        self._prune()
        self.peak = self.current


_LIBC: Any = None


def release_heap() -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim(0)``); False elsewhere.

    After a large run the allocator keeps freed pages for reuse, so the process stays several
    GB larger than what it holds. Harmless and cheap (milliseconds) when there is nothing to give.
    """
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
        except OSError:
            lib = None
        _LIBC = lib if lib is not None and hasattr(lib, "malloc_trim") else False
    if not _LIBC:
        return False
    return bool(_LIBC.malloc_trim(0))
