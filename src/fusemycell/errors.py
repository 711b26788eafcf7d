"""Problems the user can fix, worded where they are found.

A :class:`UserError` carries the message meant for the person at the keyboard and the settings it concerns.
A setting is named through a :class:`Setting` placeholder rather than a hard-coded spelling, because the
same setting has different names in different commands: ``kedro run`` sets ``inference.output_dir`` with
``--params inference.output_dir=FOLDER``, ``fusemycell predict`` with its OUTPUT argument. The command that
prints the error chooses the words (:meth:`UserError.message`); nothing rewrites a message after the fact.

Any other exception is a bug (or a library's own failure) and keeps its traceback.

Example::

    raise UserError(
        "The output folder {folder} already holds predictions. Choose another one: {output}.",
        folder=path,
        output=Setting("inference.output_dir", "FOLDER"),
    )

``str(error)`` gives the ``kedro run`` words (``--params inference.output_dir=FOLDER``);
``error.message({"inference.output_dir": "OUTPUT"})`` gives ``fusemycell predict``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Setting", "UserError", "UserMessage", "find_user_error", "in_words"]


@dataclass(frozen=True)
class Setting:
    """A parameter the user sets, as a message mentions it.

    ``name``: the parameter (``inference.output_dir``); ``value``: an example value (``FOLDER``) when the
    message tells the user to set it (the ``kedro run`` words are then ``--params name=value``), or the
    value to show next to the name (``inference.overwrite: true``) with ``assignment=False``.
    """

    name: str
    value: str = ""
    assignment: bool = True

    def words(self, names: Mapping[str, str] | None = None) -> str:
        """How a command names this setting: ``names[name]`` where the command has its own word for it.

        A value shown next to the name follows the command's word (``--backend torch``), except ``true``: a
        setting switched on is the command's word alone (a flag such as ``--overwrite``, a ticked box).
        """
        if names and self.name in names:
            own = names[self.name]
            return f"{own} {self.value}" if self.value and not self.assignment and self.value != "true" else own
        if not self.value:
            return self.name
        return f"--params {self.name}={self.value}" if self.assignment else f"{self.name}: {self.value}"


class UserError(ValueError):
    """A problem of the inputs, parameters or folders that the user can fix; the message says how.

    ``template`` is the message with ``{placeholders}``; each keyword fills one. A :class:`Setting` value is
    worded by the command that prints the error; any other value is inserted as ``str(value)``.
    Subclasses :class:`ValueError` so that code catching a bad value keeps working.
    """

    def __init__(self, template: str, /, **values: Any) -> None:
        self.template = template
        self.values = values
        super().__init__(self.message())

    @property
    def settings(self) -> tuple[Setting, ...]:
        """The settings this error concerns, in the order the message names them."""
        return tuple(v for v in self.values.values() if isinstance(v, Setting))

    def message(self, names: Mapping[str, str] | None = None) -> str:
        """The message, each setting named as ``names`` says (a command's own words) or as ``kedro run`` does."""
        return _fill(self.template, self.values, names)

    def line(self) -> UserMessage:
        """The message as a :class:`UserMessage`: a ``str`` for a report or a list of failures that a command can
        still word its own way (put in another error's values, it is worded with that error)."""
        return UserMessage(self.template, **self.values)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across ranks and worker processes
        return (_rebuild, (type(self), self.template, self.values))


def _rebuild(cls: type[UserError], template: str, values: dict[str, Any]) -> UserError:
    error = cls.__new__(cls)
    UserError.__init__(error, template, **values)
    return error


def _fill(template: str, values: Mapping[str, Any], names: Mapping[str, str] | None) -> str:
    """``template`` filled: a Setting in the command's words, a nested UserMessage or UserError worded the same way."""
    filled = {
        k: v.words(names)
        if isinstance(v, Setting)
        else v.message(names)
        if isinstance(v, (UserError, UserMessage))
        else v
        for k, v in values.items()
    }
    return template.format(**filled) if filled else template


class UserMessage(str):
    """A line for the user that is not an error (a warning, a report line), with its settings as placeholders.

    It *is* the ``kedro run`` words (a ``str``: it can be logged, compared, written to JSON), and keeps its
    template so that a command can word it again: ``logger.warning("%s", UserMessage(...))`` is printed by
    ``fusemycell predict`` in its own words (:func:`in_words`).
    """

    template: str
    values: dict[str, Any]

    def __new__(cls, template: str, /, **values: Any) -> UserMessage:
        text = super().__new__(cls, _fill(template, values, None))
        text.template, text.values = template, values
        return text

    def message(self, names: Mapping[str, str] | None = None) -> str:
        """The line, each setting named as ``names`` says or as ``kedro run`` does."""
        return _fill(self.template, self.values, names)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_message, (type(self), self.template, self.values))


def _message(cls: type[UserMessage], template: str, values: dict[str, Any]) -> UserMessage:
    return cls(template, **values)


def in_words(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` in a command's words when it is a :class:`UserError` or a :class:`UserMessage`; else itself."""
    return value.message(names) if isinstance(value, (UserError, UserMessage)) else value


def find_user_error(error: BaseException | None) -> UserError | None:
    """The :class:`UserError` behind ``error``: itself, or the first one among its causes.

    Kedro wraps a dataset's exception in its own ``DatasetError`` (``raise DatasetError(...) from error``);
    the user's problem is the one the project raised.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None
