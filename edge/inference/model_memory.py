"""How much memory a model needs, read from its graph before anything is loaded.

A hostile or broken model can ask for tens of GB at load time: a huge weight (inline or in an
external data file) or a ``ConstantOfShape``/``Expand`` whose output ONNX Runtime folds into a
constant while it builds the session. Both are visible in the graph: the weights' declared
shapes, and the intermediate shapes that ONNX shape inference (with data propagation) computes.
The estimate is a lower bound — weights plus the largest single intermediate tensor — compared
with the memory this device has available, so such a model is refused with numbers instead of
being killed by the OOM killer or failing with ``MemoryError:`` and nothing after it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import onnx

logger = logging.getLogger(__name__)
GIB = 1 << 30
MEMINFO = Path("/proc/meminfo")
HEADROOM = 0.8  # of the available memory: the rest of the appliance needs some too


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    largest_tensor_bytes: int
    largest_tensor: str | None

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.largest_tensor_bytes


def element_bytes(elem_type: int) -> int:
    """Bytes per element of an ONNX tensor type (1 for types numpy does not size, e.g. bool)."""
    try:
        return max(1, int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize))
    except (KeyError, TypeError, ValueError):
        return 4


def tensor_bytes(dims: list[int], elem_type: int) -> int:
    count = 1
    for dim in dims:
        count *= max(dim, 1)  # symbolic or unknown dimensions count as 1: a lower bound
    return count * element_bytes(elem_type)


def estimate(model: onnx.ModelProto) -> MemoryEstimate:
    """Weights (declared shapes, inline or external) + the largest inferred intermediate."""
    graph = model.graph
    weights = sum(tensor_bytes(list(t.dims), t.data_type) for t in graph.initializer)
    largest, name = 0, None
    for value in _inferred_values(model):
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]
        size = tensor_bytes(dims, tensor.elem_type)
        if size > largest:
            largest, name = size, value.name
    return MemoryEstimate(weights, largest, name)


def _inferred_values(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - a graph ONNX cannot infer still gets the weights check
        logger.info("shape inference failed (%s); estimating memory from the weights only", exc)
        return []
    graph = inferred.graph
    return [*graph.value_info, *graph.output]


def available_bytes(meminfo: Path = MEMINFO) -> int:
    """``MemAvailable`` (what can be allocated without swapping), else physical memory."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def gib(size: int) -> str:
    return f"{size / GIB:.3g} GiB"
