"""Find JSON values in free text the way real models write it (prose, fences, decoys, cut-off answers).

The scanner walks the text once per opener with a string- and escape-aware bracket matcher that jumps
between structural characters with a regex. What one match learns about the openers nested inside it (their
closer, or that they never close) is memoised, so a long answer is scanned in roughly linear time.

Only conservative repairs are tried on a balanced span that does not parse: control characters inside
strings, trailing commas before `}`/`]`, and typographic quotes when the span has no ASCII quote at all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

SpanState = Literal["closed", "unclosed", "mismatch"]

_STRUCTURAL = re.compile(r'[\[\]{}"]')
_IN_STRING = re.compile(r'["\\]')
_OPENER = re.compile(r"[\[{]")
_NUMBER_LIST = re.compile(r"\[\s*-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\s*,")
_OBJECT_KEY = re.compile(r'"(?:[^"\\\n]|\\.){0,200}"\s*:')
_SMART_KEY = re.compile(r"“[^“”\n]{0,200}”\s*:")
_TRAILING_COMMA = re.compile(r'("(?:[^"\\]|\\.)*")|,(\s*[}\]])', re.DOTALL)
_THINK_OPEN = re.compile(r"<think(?:ing)?>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think(?:ing)?>", re.IGNORECASE)
_CLOSERS = {"[": "]", "{": "}"}
_VALUE_START = set('"{[]}-0123456789tfnNI')  # NaN / Infinity: json accepts them

WORK_PER_CHAR = 8  # scanner steps plus decoded characters allowed per character of input
_STRICT = json.JSONDecoder()
_LAX = json.JSONDecoder(strict=False)


@dataclass(frozen=True)
class Found:
    """A complete JSON value at `text[start:end]`; `top_level` is False when it sits inside a broken span."""

    start: int
    end: int
    value: Any
    top_level: bool
    repairs: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Broken:
    """A JSON-looking span that does not parse (`invalid`) or never closes before the end (`unclosed`)."""

    start: int
    end: int
    kind: Literal["invalid", "unclosed"]
    error: str = ""

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class Scan:
    """Everything the scanner found in one text."""

    found: list[Found] = field(default_factory=list)
    broken: list[Broken] = field(default_factory=list)
    exhausted: bool = False

    @property
    def top_level(self) -> list[Found]:
        return [f for f in self.found if f.top_level]

    @property
    def anything(self) -> bool:
        return bool(self.found or self.broken)


class _Exhausted(Exception):
    """The work budget ran out: pathological input (thousands of nested or string-straddling brackets)."""


class _Budget:
    """Caps the scanner's work at a multiple of the text length so no input costs more than linear time."""

    def __init__(self, length: int) -> None:
        self.left = WORK_PER_CHAR * length + 50_000

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise _Exhausted


def _match(text: str, start: int, memo: dict[int, tuple[SpanState, int]], budget: _Budget) -> None:
    """Match the opener at `start`; record the outcome of it and of every opener met outside strings."""
    stack: list[tuple[str, int]] = [(text[start], start)]
    pos = start + 1
    length = len(text)
    while True:
        budget.spend(1)
        m = _STRUCTURAL.search(text, pos)
        if m is None:
            for _, p in stack:
                memo[p] = ("unclosed", length)
            return
        char, i = m.group(), m.start()
        if char == '"':
            j = i + 1
            while True:
                budget.spend(1)
                s = _IN_STRING.search(text, j)
                if s is None:
                    for _, p in stack:
                        memo[p] = ("unclosed", length)
                    return
                if s.group() == "\\":
                    j = s.start() + 2
                    continue
                pos = s.start() + 1
                break
            continue
        if char in _CLOSERS:
            stack.append((char, i))
            pos = i + 1
            continue
        opener, p = stack[-1]
        if _CLOSERS[opener] != char:
            for _, q in stack:
                memo[q] = ("mismatch", i + 1)
            return
        stack.pop()
        memo[p] = ("closed", i + 1)
        if not stack:
            return
        pos = i + 1


def _plausible_start(text: str, start: int) -> bool:
    """Could a JSON value start at the opener `start`? Rejects prose like `[ETH, SOL]` or `{COIN}`."""
    rest = text[start + 1 : start + 200].lstrip()
    if not rest:
        return True
    if text[start] == "{":
        return rest[0] in '"}“'
    return rest[0] in _VALUE_START or rest[0] == "“"


def _json_ish(text: str, start: int, end: int) -> bool:
    """Does a span that failed to parse still look like JSON (worth calling invalid or truncated)?"""
    rest = text[start + 1 : min(end, start + 400)].lstrip()
    if not rest:
        return True
    if text[start] == "{":
        return rest[0] == "}" or _OBJECT_KEY.match(rest) is not None or _SMART_KEY.match(rest) is not None
    if rest[0] in '{["“':
        return True
    return _NUMBER_LIST.match(text, start) is not None or (end == len(text) and rest[0] in "-0123456789")


def _strip_trailing_commas(span: str) -> str:
    return _TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), span)


def decode_span(span: str) -> tuple[bool, Any, tuple[str, ...], str]:
    """Parse one balanced span, trying the conservative repairs in turn; returns (ok, value, repairs, error)."""
    try:
        return True, _STRICT.decode(span), (), ""
    except RecursionError:
        return False, None, (), "nested too deeply"
    except ValueError as exc:
        error = str(exc)
    attempts: list[tuple[str, tuple[str, ...]]] = [(span, ())]
    no_commas = _strip_trailing_commas(span)
    if no_commas != span:
        attempts.append((no_commas, ("trailing commas removed",)))
    if '"' not in span and ("“" in span or "”" in span):
        smart = span.replace("“", '"').replace("”", '"')
        attempts.append((smart, ("typographic quotes replaced by ASCII quotes",)))
        smart_no_commas = _strip_trailing_commas(smart)
        if smart_no_commas != smart:
            attempts.append(
                (smart_no_commas, ("typographic quotes replaced by ASCII quotes", "trailing commas removed"))
            )
    for candidate, repairs in attempts:
        for decoder, extra in ((_STRICT, ()), (_LAX, ("control characters inside strings accepted",))):
            if candidate is span and decoder is _STRICT:
                continue  # already tried above
            try:
                return True, decoder.decode(candidate), repairs + extra, ""
            except (ValueError, RecursionError):
                continue
    return False, None, (), error


def scan(text: str) -> Scan:
    """Find every complete JSON object/array in `text` (outermost first) and the broken JSON-looking spans."""
    result = Scan()
    memo: dict[int, tuple[SpanState, int]] = {}
    budget = _Budget(len(text))
    covered = 0  # end of the last top-level span: openers before it are nested
    pos = 0
    while True:
        m = _OPENER.search(text, pos)
        if m is None:
            return result
        i = m.start()
        if not _plausible_start(text, i):
            pos = i + 1
            continue
        try:
            if i not in memo:
                _match(text, i, memo, budget)
            state, end = memo[i]
            if state == "closed":
                budget.spend(end - i)
        except _Exhausted:
            result.exhausted = True
            result.broken.append(Broken(i, len(text), "invalid", "scan stopped early: pathological bracket structure"))
            return result
        top = i >= covered
        error = "the JSON never closes before the end of the text" if state == "unclosed" else "unbalanced brackets"
        if state == "closed":
            ok, value, repairs, error = decode_span(text[i:end])
            if ok:
                result.found.append(Found(i, end, value, top, repairs))
                covered = max(covered, end)
                pos = end
                continue
        if top and _json_ish(text, i, end):  # a nested broken span lies inside an already covered one
            kind: Literal["invalid", "unclosed"] = "invalid"
            if state == "unclosed":
                budget.spend(end - i)
                cut, stop = _cut_off(text[i:])
                if cut:
                    kind = "unclosed"
                else:  # prose like `{"ETH": {...}, etc.` that never closes: broken only up to where JSON stops
                    end, error = i + max(stop, 1), "JSON-looking text that stops being JSON and never closes"
            result.broken.append(Broken(i, end, kind, error))
            covered = end
        pos = i + 1


def _cut_off(span: str) -> tuple[bool, int]:
    """Is an unclosed span a JSON prefix cut at the end (True), or JSON-looking text that turns into prose?

    Returns the verdict and the offset where decoding stopped."""
    try:
        _LAX.decode(span)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Unterminated string"):
            return True, exc.pos
        tail = span.rstrip()
        while tail.endswith(("...", "…")):
            tail = tail.removesuffix("...").removesuffix("…").rstrip()
        return exc.pos >= len(tail) - 6, exc.pos
    except (ValueError, RecursionError):
        return False, len(span)
    return False, len(span)


@dataclass(frozen=True)
class ThinkSplit:
    """The answer text outside `<think>` blocks and the text inside them."""

    outside: str
    inside: str
    had_think: bool
    unclosed: bool
    tags: tuple[int, ...] = ()  # where the tags that were used start


def split_think(text: str) -> ThinkSplit:
    """Separate `<think>...</think>` blocks (also an unclosed `<think>`, or a `</think>` with no opening tag)."""
    outside: list[str] = []
    inside: list[str] = []
    tags: list[int] = []
    pos = 0
    first_open = _THINK_OPEN.search(text)
    first_close = _THINK_CLOSE.search(text)
    if first_close is not None and (first_open is None or first_close.start() < first_open.start()):
        inside.append(text[: first_close.start()])
        tags.append(first_close.start())
        pos = first_close.end()
    unclosed = False
    while True:
        o = _THINK_OPEN.search(text, pos)
        if o is None:
            outside.append(text[pos:])
            break
        outside.append(text[pos : o.start()])
        tags.append(o.start())
        c = _THINK_CLOSE.search(text, o.end())
        if c is None:
            inside.append(text[o.end() :])
            unclosed = True
            break
        inside.append(text[o.end() : c.start()])
        tags.append(c.start())
        pos = c.end()
    return ThinkSplit("\n".join(outside), "\n".join(inside), bool(tags), unclosed, tuple(tags))
