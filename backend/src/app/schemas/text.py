"""Text that every part of the agent can store and send: valid Unicode (no lone surrogates such as the JSON
escape `"\\ud800"`, which UTF-8 cannot encode, so a database or a JSON answer would fail on it) and no NUL or
other control characters (PostgreSQL refuses NUL in text). A single line allows no line breaks or tabs; a
multi-line text (a prompt template) allows them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_LINE_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # \t \n \r allowed
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def text_problem(value: str, *, multiline: bool) -> str | None:
    """Why `value` cannot be stored or sent, or None when it can."""
    if _SURROGATE.search(value):
        return "contains a lone surrogate (invalid Unicode)"
    controls = (_TEXT_CONTROLS if multiline else _LINE_CONTROLS).search(value)
    if controls:
        return f"contains the control character U+{ord(controls.group()):04X}"
    return None


def _line(value: str) -> str:
    problem = text_problem(value, multiline=False)
    if problem:
        raise ValueError(f"text {problem}")
    return value


def _text(value: str) -> str:
    problem = text_problem(value, multiline=True)
    if problem:
        raise ValueError(f"text {problem}")
    return value


# One line of valid text (a name, a reason).
CleanLine = Annotated[str, AfterValidator(_line)]
# Valid text over several lines (a template).
CleanText = Annotated[str, AfterValidator(_text)]
