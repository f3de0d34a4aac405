"""One typed function per step of the loop, shared by the commands and the pipeline.

``generate``, ``fit``, ``train``, ``evaluate`` and ``pipeline`` build these settings from
their config (:func:`agent_spec`, :func:`train_settings`, ... in
:mod:`~supportrl.experiments.stages.settings` are the only readers of the config here) and
call the same stage functions, so an override reaches every command that runs the stage it
configures. The stage functions take dataclasses, arrays and paths, never a ``DictConfig``.

Modules: :mod:`~supportrl.experiments.stages.settings` (settings and their readers),
:mod:`~supportrl.experiments.stages.data` (generate, fit, fidelity, values, segments),
:mod:`~supportrl.experiments.stages.train` (train) and
:mod:`~supportrl.experiments.stages.ope` (evaluate). Every public name is importable from
here.
"""

from __future__ import annotations

from supportrl.experiments.stages.data import (
    FitData,
    GeneratedData,
    fidelity_stage,
    fit_data_stage,
    fit_stage,
    generate_stage,
    segment_stage,
    split_conversations,
    timed,
    value_stage,
)
from supportrl.experiments.stages.ope import (
    OPEResult,
    estimate_text,
    evaluate_stage,
    off_policy_evaluation,
    prepare_for_ope,
    print_ope,
    start_csat_fit,
)
from supportrl.experiments.stages.settings import (
    AgentSpec,
    EnvSettings,
    FitSettings,
    GenerateSettings,
    GuardrailSettings,
    LoopSettings,
    OPESection,
    OPESettings,
    PipelineSettings,
    RaySettings,
    SimulatorSpec,
    TrainSection,
    TrainSettings,
    agent_spec,
    command_line_keys,
    env_settings,
    fit_settings_of,
    generate_settings,
    loop_settings,
    ope_settings,
    pipeline_settings,
    ray_settings,
    read_section,
    reward_spec,
    simulator_spec,
    stage_settings,
    tracking_settings,
    train_settings,
    world_config,
)
from supportrl.experiments.stages.train import (
    TrainedAgent,
    dqn_config,
    train_stage,
)

__all__ = [
    "AgentSpec",
    "SimulatorSpec",
    "RaySettings",
    "GenerateSettings",
    "GuardrailSettings",
    "FitSettings",
    "TrainSection",
    "TrainSettings",
    "EnvSettings",
    "OPESection",
    "OPESettings",
    "PipelineSettings",
    "read_section",
    "agent_spec",
    "simulator_spec",
    "ray_settings",
    "generate_settings",
    "fit_settings_of",
    "env_settings",
    "train_settings",
    "ope_settings",
    "command_line_keys",
    "pipeline_settings",
    "world_config",
    "reward_spec",
    "LoopSettings",
    "loop_settings",
    "tracking_settings",
    "stage_settings",
    "GeneratedData",
    "generate_stage",
    "FitData",
    "split_conversations",
    "fit_data_stage",
    "fidelity_stage",
    "fit_stage",
    "value_stage",
    "timed",
    "segment_stage",
    "TrainedAgent",
    "train_stage",
    "dqn_config",
    "OPEResult",
    "evaluate_stage",
    "prepare_for_ope",
    "start_csat_fit",
    "off_policy_evaluation",
    "print_ope",
    "estimate_text",
]
