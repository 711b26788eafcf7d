"""The user's error type: settings worded by the command that prints them, found behind Kedro's wrapper."""

from __future__ import annotations

import pickle

from kedro.io.core import DatasetError

from fusemycell.errors import Setting, UserError, UserMessage, find_user_error, in_words


def _busy() -> UserError:
    return UserError(
        "The output folder {folder} is not empty. Choose another one: {output}, or set {overwrite}.",
        folder="/data/out",
        output=Setting("inference.output_dir", "FOLDER"),
        overwrite=Setting("inference.overwrite", "true", assignment=False),
    )


def test_kedro_run_words_are_the_default():
    error = _busy()
    assert str(error) == (
        "The output folder /data/out is not empty. Choose another one: --params inference.output_dir=FOLDER, "
        "or set inference.overwrite: true."
    )
    assert [s.name for s in error.settings] == ["inference.output_dir", "inference.overwrite"]


def test_a_command_names_the_settings_in_its_own_words():
    message = _busy().message({"inference.output_dir": "OUTPUT", "inference.overwrite": "--overwrite"})
    assert message == "The output folder /data/out is not empty. Choose another one: OUTPUT, or set --overwrite."
    assert "inference." not in message


def test_a_setting_without_value_is_its_name():
    assert Setting("inference.model_uri").words() == "inference.model_uri"
    assert Setting("inference.model_uri").words({"inference.model_uri": "--model"}) == "--model"


def test_braces_in_values_are_not_placeholders():
    error = UserError("Bad file {path}.", path="/tmp/{odd}.tif")
    assert str(error) == "Bad file /tmp/{odd}.tif."


def test_found_behind_kedros_dataset_error_and_survives_pickling():
    error = _busy()
    try:
        try:
            raise error
        except UserError as inner:
            raise DatasetError(f"Failed while saving data to dataset X.\n{inner}") from inner
    except DatasetError as wrapped:
        assert find_user_error(wrapped) is error
    assert find_user_error(RuntimeError("a bug")) is None
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is UserError and str(copy) == str(error) and copy.settings == error.settings


class FolderProblem(UserError):
    """A subclass, as modules define them."""


def test_subclasses_keep_their_type_through_pickling():
    copy = pickle.loads(pickle.dumps(FolderProblem("No folder {f}.", f="x")))
    assert isinstance(copy, FolderProblem) and str(copy) == "No folder x."


def test_a_value_follows_the_commands_word_except_a_switch_turned_on():
    backend = Setting("inference.backend", "torch", assignment=False)
    assert backend.words() == "inference.backend: torch"
    assert backend.words({"inference.backend": "--backend"}) == "--backend torch"
    assert (
        Setting("inference.overwrite", "false", assignment=False).words({"inference.overwrite": "--x"}) == "--x false"
    )


def test_a_user_message_is_the_kedro_words_and_keeps_its_template():
    line = UserMessage(
        "a.tif: skipped ({mode}).", mode=Setting("inference.outside_training", "refuse", assignment=False)
    )
    assert line == "a.tif: skipped (inference.outside_training: refuse)." and isinstance(line, str)
    names = {"inference.outside_training": "--outside-training"}
    assert in_words(line, names) == "a.tif: skipped (--outside-training refuse)."
    assert in_words(_busy(), names).startswith("The output folder /data/out")
    assert in_words("plain text", names) == "plain text" and in_words(3, names) == 3
    copy = pickle.loads(pickle.dumps(line))
    assert type(copy) is UserMessage and copy.message(names) == in_words(line, names)


def test_a_message_inside_another_is_worded_with_it():
    """A failure kept as a line (a report's list) and listed in the run's error reads in the command's words."""
    refused = UserError(
        "a.tif: skipped ({mode})", mode=Setting("inference.outside_training", "refuse", assignment=False)
    )
    line = refused.line()
    assert line == str(refused) and isinstance(line, UserMessage)
    summary = UserError("{count} volume(s) failed:\n  - {p0}\n  - {p1}", count=2, p0=line, p1="b.tif: unreadable")
    names = {"inference.outside_training": "--outside-training"}
    assert (
        summary.message(names)
        == "2 volume(s) failed:\n  - a.tif: skipped (--outside-training refuse)\n  - b.tif: unreadable"
    )
    assert "inference.outside_training: refuse" in str(summary)
