"""CPU, memory and node disk of one SGLang pod, from what a node of the pool offers.

An SGLang pod owns its node's accelerators, so it should own the node: requests = limits (Guaranteed QoS: the last
pod the kubelet evicts under memory pressure, and the only kind the static CPU manager and the topology manager
pin next to its GPUs and NICs) at the node's allocatable less a headroom for what else runs on every GPU node
(device plugins, the network operator, the CNI, node exporters: DaemonSets that the kubelet's allocatable does not
already exclude). Whole cores, so the static CPU manager gives exclusive ones.

Disk: with Hugging Face weights every pod downloads the checkpoint into its cache emptyDir; the emptyDir gets a
sizeLimit of the checkpoint plus a margin plus the JIT caches, and the pod requests that much ephemeral storage, so
the scheduler places it only where the disk holds it (and the kubelet evicts it rather than filling the node)."""

from __future__ import annotations

import math
from dataclasses import dataclass

GiB = 1024**3

#: headroom left on each node for its DaemonSets: max(2 cores, 5 %) of CPU, max(8 GiB, 5 %) of memory
CPU_HEADROOM_CORES, CPU_HEADROOM_FRACTION = 2, 0.05
MEMORY_HEADROOM_BYTES, MEMORY_HEADROOM_FRACTION = 8 * GiB, 0.05
#: host memory SGLang needs besides /dev/shm (tokenizer/detokenizer/scheduler processes, pinned host buffers)
PROCESS_MEMORY_BYTES = 32 * GiB
#: the cache emptyDir holds the downloaded checkpoint (x1.05: HF's partial files while it downloads) and the JIT
#: caches (DeepGEMM kernels, flashinfer, torch compile: tens of GiB on one model)
DOWNLOAD_MARGIN, JIT_CACHE_BYTES = 1.05, 32 * GiB
#: the container's writable layer and logs
WRITABLE_LAYER_BYTES = 8 * GiB


@dataclass(frozen=True)
class NodeShape:
    """What one node offers to pods (allocatable); None where unknown."""

    cpu_millis: int | None = None
    memory_bytes: int | None = None
    ephemeral_bytes: int | None = None


@dataclass(frozen=True)
class PodSize:
    cpu_cores: int | None  # None: not sized (no node shape and no override)
    memory_bytes: int | None
    ephemeral_bytes: int  # request
    cache_limit_bytes: int | None  # sizeLimit of the cache emptyDir; None when the cache is a hostPath


class SizeError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def gib(b: float) -> str:
    return f"{b / GiB:,.0f} GiB"


def cache_bytes(checkpoint_bytes: float, downloads: bool) -> int:
    return int(math.ceil((checkpoint_bytes * DOWNLOAD_MARGIN if downloads else 0) + JIT_CACHE_BYTES))


def pod_size(node: NodeShape, *, shm_bytes: int, checkpoint_bytes: float, downloads: bool, cache_on_host: bool,
             cpu_override_millis: int | None = None, memory_override_bytes: int | None = None,
             ephemeral_override_bytes: int | None = None) -> PodSize:
    """Requests = limits of one SGLang pod. Raises SizeError naming the field when the spec or the pool cannot hold
    it (memory below /dev/shm, weights larger than the node's disk, more than the node offers)."""
    cpu = _cpu(node, cpu_override_millis)
    memory = _memory(node, memory_override_bytes, shm_bytes)
    cache = None if cache_on_host else cache_bytes(checkpoint_bytes, downloads)
    eph = ephemeral_override_bytes if ephemeral_override_bytes is not None else (cache or 0) + WRITABLE_LAYER_BYTES
    if cache is not None and ephemeral_override_bytes is not None and ephemeral_override_bytes < cache:
        raise SizeError("spec.resources.ephemeralStorage", f"{gib(ephemeral_override_bytes)} is below the cache the "
                        f"pod fills ({gib(cache)}: {'the checkpoint x1.05 + ' if downloads else ''}JIT caches)")
    if node.ephemeral_bytes is not None and eph > node.ephemeral_bytes:
        field = "spec.weights.huggingFace" if downloads and ephemeral_override_bytes is None else \
            "spec.resources.ephemeralStorage"
        ckpt = f"the checkpoint {gib(checkpoint_bytes)} x1.05 + " if downloads else ""
        raise SizeError(field, f"each pod needs {gib(eph)} of node disk ({ckpt}"
                        f"{gib(JIT_CACHE_BYTES)} JIT caches + {gib(WRITABLE_LAYER_BYTES)} writable layer); the pool's "
                        f"nodes offer {gib(node.ephemeral_bytes)} of ephemeral storage: put the weights on a PVC "
                        f"(spec.weights.pvc) or a node path (spec.weights.hostPath)")
    return PodSize(cpu_cores=cpu, memory_bytes=memory, ephemeral_bytes=eph, cache_limit_bytes=cache)


def _cpu(node: NodeShape, override_millis: int | None) -> int | None:
    if override_millis is not None:
        if override_millis % 1000:
            raise SizeError("spec.resources.cpu", f"{override_millis}m is not a whole number of cores: the static CPU "
                            "manager only gives exclusive cores to integer requests")
        cores = override_millis // 1000
        if node.cpu_millis is not None and override_millis > node.cpu_millis:
            raise SizeError("spec.resources.cpu", f"{cores} cores is more than a node of the pool offers "
                            f"({node.cpu_millis / 1000:g})")
        return cores
    if node.cpu_millis is None:
        return None
    headroom = max(CPU_HEADROOM_CORES * 1000, node.cpu_millis * CPU_HEADROOM_FRACTION)
    return max(1, int((node.cpu_millis - headroom) // 1000))


def _memory(node: NodeShape, override: int | None, shm_bytes: int) -> int | None:
    floor = shm_bytes + PROCESS_MEMORY_BYTES
    if override is not None:
        if override < floor:
            raise SizeError("spec.resources.memory", f"{gib(override)} is below the memory-backed /dev/shm "
                            f"({gib(shm_bytes)}) + {gib(PROCESS_MEMORY_BYTES)} for SGLang's processes = {gib(floor)}")
        if node.memory_bytes is not None and override > node.memory_bytes:
            raise SizeError("spec.resources.memory", f"{gib(override)} is more than a node of the pool offers "
                            f"({gib(node.memory_bytes)})")
        return override
    if node.memory_bytes is None:
        return None
    headroom = max(MEMORY_HEADROOM_BYTES, node.memory_bytes * MEMORY_HEADROOM_FRACTION)
    size = int((node.memory_bytes - headroom) // GiB) * GiB
    if size < floor:
        raise SizeError("spec.pool", f"the pool's nodes offer {gib(node.memory_bytes)} of memory; an SGLang pod "
                        f"needs {gib(floor)} (/dev/shm {gib(shm_bytes)} + {gib(PROCESS_MEMORY_BYTES)}) plus "
                        f"{gib(headroom)} headroom")
    return size
