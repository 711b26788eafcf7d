"""Project hooks, one module per concern.

- :mod:`~fusemycell.hooks.environment`: the ``--env`` exists and its training device is there;
- :mod:`~fusemycell.hooks.parameters`: every parameter validated once; nodes receive the typed result;
- :mod:`~fusemycell.hooks.catalog`: datasets rebuilt on the run's locations;
- :mod:`~fusemycell.hooks.planning`: output folders safe and locked, every input there
  (the planning itself is Kedro-free: :mod:`fusemycell.run_planning`);
- :mod:`~fusemycell.hooks.memory`: peak memory per node, one table at the end;
- :mod:`~fusemycell.hooks.summary`: where the run put things.

:func:`project_hooks` builds them in the order ``settings.HOOKS`` registers them.
"""

from fusemycell.hooks.environment import EnvironmentCheckHooks, UnknownEnvironmentError
from fusemycell.hooks.memory import MemoryMonitorHooks, NodeMemory
from fusemycell.hooks.parameters import ParameterHooks
from fusemycell.hooks.planning import RunPlanningHooks
from fusemycell.hooks.summary import RunSummaryHooks
from fusemycell.run_planning import MissingInputError, hint_command

__all__ = [
    "EnvironmentCheckHooks",
    "MemoryMonitorHooks",
    "MissingInputError",
    "NodeMemory",
    "ParameterHooks",
    "RunPlanningHooks",
    "RunSummaryHooks",
    "UnknownEnvironmentError",
    "hint_command",
    "project_hooks",
]


def project_hooks() -> tuple[object, ...]:
    """The project's hooks, in registration order.

    Kedro calls hooks of one kind last-registered first: at the end of a run the memory table is
    printed before the summary, which is the last thing a run prints. The parameters are checked
    (``tryfirst``) before the training device and before any folder is taken.
    """
    from fusemycell.run_messages import RunNameHooks

    parameters = ParameterHooks()
    return (
        EnvironmentCheckHooks(parameters),
        parameters,
        RunPlanningHooks(parameters),
        RunSummaryHooks(parameters),
        MemoryMonitorHooks(),
        RunNameHooks(),
    )
