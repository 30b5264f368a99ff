"""Engine pod sizing (planner.pod_resources) and its refusals, with the numbers in the message."""

from __future__ import annotations

import pytest

from moe_operator.planner.pod_resources import GiB, NodeShape, SizeError, pod_size

H200 = NodeShape(cpu_millis=224_000, memory_bytes=2048 * GiB, ephemeral_bytes=3500 * GiB)
KIMI = 595e9  # bytes of the INT4 checkpoint


def size(node: NodeShape = H200, **kw: object) -> object:
    args = {"shm_bytes": 64 * GiB, "checkpoint_bytes": KIMI, "downloads": True, "cache_on_host": False, **kw}
    return pod_size(node, **args)  # type: ignore[arg-type]


def test_sized_from_the_node_with_headroom() -> None:
    s = size()
    assert s.cpu_cores == 212  # 224 - max(2, 5 %) = 212.8 -> whole cores
    assert s.memory_bytes == 1945 * GiB  # 2048 GiB - 5 %, whole GiB
    assert s.cache_limit_bytes is not None and 600 * GiB < s.cache_limit_bytes < 620 * GiB  # checkpoint x1.05 + JIT
    assert s.ephemeral_bytes == s.cache_limit_bytes + 8 * GiB


def test_weights_on_a_volume_need_only_the_jit_cache() -> None:
    s = size(downloads=False)
    assert s.cache_limit_bytes == 32 * GiB


def test_unknown_node_leaves_cpu_and_memory_unsized() -> None:
    s = size(NodeShape())
    assert s.cpu_cores is None and s.memory_bytes is None and s.ephemeral_bytes > 0


@pytest.mark.parametrize(("kw", "field", "text"), [
    ({"memory_override_bytes": 32 * GiB}, "spec.resources.memory", "below the memory-backed /dev/shm (64 GiB)"),
    ({"memory_override_bytes": 4096 * GiB}, "spec.resources.memory", "more than a node of the pool offers"),
    ({"cpu_override_millis": 1500}, "spec.resources.cpu", "not a whole number of cores"),
    ({"cpu_override_millis": 300_000}, "spec.resources.cpu", "more than a node of the pool offers (224)"),
    ({"ephemeral_override_bytes": 100 * GiB}, "spec.resources.ephemeralStorage", "below the cache"),
])
def test_overrides_that_cannot_work_are_refused_with_the_numbers(kw: dict, field: str, text: str) -> None:
    with pytest.raises(SizeError) as e:
        size(**kw)
    assert e.value.field == field and text in e.value.message


def test_a_checkpoint_larger_than_the_node_disk_is_refused_naming_the_weights() -> None:
    with pytest.raises(SizeError) as e:
        size(NodeShape(ephemeral_bytes=500 * GiB))
    assert e.value.field == "spec.weights.huggingFace"
    assert "554 GiB" in e.value.message and "500 GiB" in e.value.message and "spec.weights.pvc" in e.value.message
