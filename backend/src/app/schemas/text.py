"""Text that every part of the agent can store and send: valid Unicode (no lone surrogates such as the JSON
escape `"\\ud800"`, which UTF-8 cannot encode, so a database or a JSON answer would fail on it) and no NUL or
other control characters (PostgreSQL refuses NUL in text). A single line allows no line breaks or tabs; a
multi-line text (a prompt template) allows them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

_LINE_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
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


# The same rules as JSON Schema patterns, so the OpenAPI schema states them (a client or a fuzzer that follows
# the schema never sends a text the server refuses); the validators above give the reason when one is sent.
LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
# A template: valid text with at least one character that is not blank (a blank one renders to nothing).
TEMPLATE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


class _Pattern:
    """Adds `pattern` to a field's JSON schema without a second check (the validator above is the check)."""

    def __init__(self, pattern: str, *, format: str | None = None) -> None:
        self.pattern = pattern
        self.format = format

    def __get_pydantic_json_schema__(self, core: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core)
        schema["pattern"] = self.pattern
        if self.format:
            schema["format"] = self.format
        return schema


# One line of valid text (a name, a reason).
CleanLine = Annotated[str, AfterValidator(_line), _Pattern(LINE_PATTERN)]
# Valid text over several lines (a template).
CleanText = Annotated[str, AfterValidator(_text), _Pattern(TEXT_PATTERN)]
# A strategy's prompt template as a request sends it: valid text, not blank, and a Jinja2 template that renders
# (checked by rendering it; the schema says so with a format of its own, which a client or a fuzzer may know).
TEMPLATE_FORMAT = "jinja2-template"
CleanTemplate = Annotated[str, AfterValidator(_text), _Pattern(TEMPLATE_PATTERN, format=TEMPLATE_FORMAT)]
