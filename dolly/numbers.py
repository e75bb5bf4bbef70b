"""Numbers as forms and API clients send them: one rule for every field that takes a number.

A browser's number box, gradio_client and JSON all deliver numbers in their own way: an int, a float
such as 7.0 for a whole number, or text ("7", " 0.5 "). Each is read here exactly (a 19-digit seed
must not round through a float), and true/false are not numbers, though Python lets bool pass as one.
"""
from __future__ import annotations

import math


def exact_number(value) -> int | float:
    """`value` as an int (kept exact) or a finite float; text holding a number is that number.
    Anything else (bool, None, other types, non-numeric text, NaN, infinity) is a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a number: {value!r:.80}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            value = float(text)  # ValueError for text that is no number
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return value


def whole_number(value) -> int:
    """`value` as an int: 7, 7.0 and "7" are 7; 7.5, "abc", True and None are a ValueError."""
    number = exact_number(value)
    if isinstance(number, float) and not number.is_integer():
        raise ValueError(f"not a whole number: {value!r:.80}")
    return int(number)
