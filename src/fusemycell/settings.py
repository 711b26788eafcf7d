"""Project settings: configuration loading, project hooks.

Parameters merge *softly*: ``conf/mac/parameters.yml`` overrides only the keys
it names (``training.batch_size``), the rest of ``training`` comes from
``conf/base``. Hooks of installed plugins (kedro-mlflow) register themselves;
the project adds its own (:func:`fusemycell.hooks.project_hooks`: environment and parameter checks,
run locations and folder locks, the memory table, the end-of-run summary, MLflow run names); other
libraries' notices a user can do nothing about are silenced once
(:func:`fusemycell.run_messages.silence_known_notices`).
"""

from kedro.config import OmegaConfigLoader

from fusemycell.hooks import project_hooks
from fusemycell.run_messages import silence_known_notices

HOOKS = project_hooks()
silence_known_notices()

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}
