"""The error tree maps to the design's exit codes in one place."""

from __future__ import annotations

import pytest

from labctl.errors import (
    BookingConflict,
    EnvironmentProblem,
    HostError,
    InputError,
    LabctlError,
    NotBooked,
    NotOwner,
    RunFailed,
    exit_code_for,
)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InputError("bad", file="x.yaml", key="k"), 2),
        (HostError("down", hosts={"a": "refused"}), 1),
        (RunFailed("no"), 1),
        (EnvironmentProblem("not root"), 1),
        (BookingConflict("taken", conflicting={"id": "b1"}), 3),
        (NotOwner("not yours"), 3),
        (NotBooked("book first"), 3),
        (LabctlError("generic"), 1),
        (ValueError("unexpected"), 1),
    ],
)
def test_exit_codes(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_input_error_names_file_and_key() -> None:
    e = InputError("unknown key", file="experiments/x.yaml", key="load.rates")
    assert str(e) == "experiments/x.yaml: load.rates: unknown key"
    assert e.to_json()["file"] == "experiments/x.yaml" and e.to_json()["kind"] == "InputError"
