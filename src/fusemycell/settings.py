"""Project settings: configuration loading, project hooks.

Parameters merge *softly*: ``conf/mac/parameters.yml`` overrides only the keys
it names (``training.batch_size``), the rest of ``training`` comes from
``conf/base``. Hooks of installed plugins (kedro-mlflow) register themselves;
the project adds an environment check, the memory monitor and the end-of-run summary.
"""

import warnings

from kedro.config import OmegaConfigLoader

from fusemycell.hooks import EnvironmentCheckHooks, MemoryMonitorHooks, ParameterHooks, RunSummaryHooks
from fusemycell.run_messages import RunNameHooks, silence_known_notices

HOOKS = (EnvironmentCheckHooks(), ParameterHooks(), MemoryMonitorHooks(), RunSummaryHooks(), RunNameHooks())
silence_known_notices()

# Other libraries' notices that a user can do nothing about, printed on every command
# (they buried the one line that matters when a run fails).
for _message in (
    r"register_new_resolver\(\) is deprecated",  # OmegaConf, called by Kedro and kedro-mlflow
    r"Add type hints to the `predict` method",  # MLflow, about kedro-mlflow's pyfunc wrapper
):
    warnings.filterwarnings("ignore", message=_message)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}
