"""Project settings: configuration loading, project hooks.

Parameters merge *softly*: ``conf/mac/parameters.yml`` overrides only the keys
it names (``training.batch_size``), the rest of ``training`` comes from
``conf/base``. Hooks of installed plugins (kedro-mlflow) register themselves;
the project adds an environment check, the memory monitor and the end-of-run summary.
"""

from kedro.config import OmegaConfigLoader

from fusemycell.hooks import EnvironmentCheckHooks, MemoryMonitorHooks, RunSummaryHooks

HOOKS = (EnvironmentCheckHooks(), MemoryMonitorHooks(), RunSummaryHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}
