"""JSON read and written as serde_json (the Rust plugins' JSON library) does, on top of the
standard library's json: the same documents are accepted and the same numbers come out.

Python's json module alone also accepts NaN and Infinity, numbers beyond f64 (as inf), escaped
lone surrogates and nesting deeper than 127 levels, all of which serde_json refuses; and
serde_json reads `-0` and integers beyond i64/u64 as floats. Objects come back as `Object`s,
which tell the keys they held more than once (a Rust struct refuses those, a map takes the last).
"""

import json
import math
import re

MAX_DEPTH = 128  # serde_json refuses arrays and objects nested this deep
STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
BRACKETS = re.compile(r"[][{}]")


class Object(dict):
    """A JSON object, with the last value of a repeated key; `repeated` holds such keys, in the
    order they repeat."""

    repeated = ()


def loads(data):
    """The JSON value in the bytes `data`; ValueError saying why when there is none."""
    text = data.decode()  # UnicodeDecodeError is a ValueError
    # Checked before parsing: the parser's recursion would exhaust a WebAssembly stack first.
    if text.count("[") + text.count("{") >= MAX_DEPTH and _depth(text) >= MAX_DEPTH:
        raise ValueError("recursion limit exceeded")
    value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float, parse_int=_int)
    if "\\u" in text:
        try:
            dumps(value).encode()
        except UnicodeEncodeError:
            raise ValueError("lone surrogate in a string escape") from None
    return value


def dumps(value):
    """Compact JSON, non-ASCII characters as they are."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _object(pairs):
    value = Object(pairs)
    if len(value) < len(pairs):
        seen = set()
        value.repeated = tuple(dict.fromkeys(key for key, _ in pairs if key in seen or seen.add(key)))
    return value


def _constant(name):
    raise ValueError(f"{name} is not a JSON value")


def _float(text):
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number out of range: {text}")
    return number


def _int(text):
    number = int(text)
    return number if -(2**63) <= number < 2**64 and text != "-0" else _float(text)


def _depth(text):
    """How deep arrays and objects nest in `text`."""
    depth = deepest = 0
    for bracket in BRACKETS.findall(STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest
