"""Distribution strategies by name: default, mirrored, multi_worker."""

from __future__ import annotations

import tensorflow as tf

from sslzoo.config import ConfigError


def make_strategy(name: str, cpu_replicas: int = 2) -> tf.distribute.Strategy:
    """Returns the `tf.distribute` strategy a config names.

    Args:
        name: "default" (one device), "mirrored" (all local GPUs; on a CPU-only machine, `cpu_replicas`
            logical CPU devices, which is how distribution is tested here), or "multi_worker"
            (MultiWorkerMirroredStrategy; reads TF_CONFIG).
        cpu_replicas: logical CPU devices for "mirrored" when there is no GPU.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if not tf.config.list_physical_devices("GPU"):
            _split_cpu(cpu_replicas)
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            return tf.distribute.MirroredStrategy(devices)
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"trainer.strategy '{name}': use default, mirrored or multi_worker")


def _split_cpu(replicas: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration()] * replicas
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == replicas:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError as error:
        raise ConfigError(
            f"trainer.strategy=mirrored needs {replicas} logical CPU devices, but TensorFlow was already "
            "initialised in this process; start a fresh process (train.py does) before any TF work"
        ) from error


def input_workers(strategy: tf.distribute.Strategy) -> int:
    """The number of machines feeding `strategy` their own input: TF_CONFIG's workers under
    MultiWorkerMirroredStrategy, else 1."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec() if resolver is not None else None
    if not spec or "worker" not in spec.jobs:
        return 1
    return max(1, spec.num_tasks("worker"))
