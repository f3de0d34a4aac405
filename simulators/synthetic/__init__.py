"""The ground-truth synthetic world: it generates schema-v1 logs and knows every policy's true value.

Modules: :mod:`~supportrl.simulators.synthetic.world` (the world and its logging policy),
:mod:`~supportrl.simulators.synthetic.generate` (log generation and true values),
:mod:`~supportrl.simulators.synthetic.scalar` (the world's scalar fast path for single-env
stepping) and :mod:`~supportrl.simulators.synthetic.parts` (logs written as Parquet parts,
larger than memory). Every public name is importable from here.
"""

from __future__ import annotations

from supportrl.simulators.synthetic.generate import (
    GeneratedLogs,
    TrueValue,
    generate_logs,
    true_value,
)
from supportrl.simulators.synthetic.params import (
    CATEGORICAL_FEATURES,
    DETECTED_INTENTS,
    INTENTS,
    NUMERIC_FEATURES,
)
from supportrl.simulators.synthetic.parts import (
    PartitionedLogs,
    partition_sizes,
    write_partitioned_logs,
)
from supportrl.simulators.synthetic.world import (
    OUTCOMES,
    LoggingPolicy,
    SyntheticWorld,
    WorldConfig,
    WorldState,
    make_env,
    make_vector_env,
    world_from_config,
)

__all__ = [
    "CATEGORICAL_FEATURES",
    "DETECTED_INTENTS",
    "INTENTS",
    "NUMERIC_FEATURES",
    "OUTCOMES",
    "GeneratedLogs",
    "LoggingPolicy",
    "SyntheticWorld",
    "TrueValue",
    "WorldConfig",
    "WorldState",
    "generate_logs",
    "make_env",
    "world_from_config",
    "make_vector_env",
    "true_value",
    "PartitionedLogs",
    "partition_sizes",
    "write_partitioned_logs",
]
