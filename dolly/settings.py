"""The environment settings that have no flag: each one's name, default and accepted range, in one place.

Modules read their setting through `setting(name)` when they are imported; app.py calls `check()`
first, before anything heavy is imported, so a bad value ends the start with a usage error (exit 2)
that names the variable and what it accepts, as a bad flag does, instead of a traceback or a crash
halfway through building the screen. (Settings that are also flags, DOLLY_PORT and the like, are
checked with their flag in app.py.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from dolly.numbers import exact_number


class SettingError(ValueError):
    """An environment setting with a value outside what it accepts."""


@dataclass(frozen=True)
class Setting:
    default: int | float
    low: int | float
    high: int | float
    whole: bool  # a whole number (else any number in the range)
    means: str  # what it sets, for the message

    def accepted(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        return f"{kind} from {self.low:,} to {self.high:,}"


SETTINGS = {
    # The Chat tab's "Max new tokens" slider runs from 1 to this cap: a slider needs two values at least.
    "DOLLY_MAX_NEW_TOKENS": Setting(1024, 2, 1_000_000, True, "the most tokens one reply may have"),
    "DOLLY_MAX_PROMPT_TOKENS": Setting(2048, 1, 1_000_000, True, "the most prompt tokens one reply may read"),
    "DOLLY_BACKEND_TIMEOUT": Setting(120, 1, 86_400, False, "seconds to wait for the --backend between tokens"),
    "DOLLY_ZERO_GPU_SECONDS": Setting(120, 1, 86_400, True, "seconds of ZeroGPU one reply may hold"),
}


def setting(name: str, environ=None) -> int | float:
    """The value of the environment setting `name` (its default when unset or empty); a SettingError
    naming the variable and the accepted range when the value is outside it."""
    spec = SETTINGS[name]
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not raw.strip():
        return spec.default if spec.whole else float(spec.default)
    try:
        value = exact_number(raw)
    except ValueError:
        value = None
    if value is None or (spec.whole and isinstance(value, float) and not value.is_integer()) \
            or not spec.low <= value <= spec.high:
        raise SettingError(f"{name} ({spec.means}) must be {spec.accepted()}, got {raw!r:.80}; "
                           f"unset it for the default, {spec.default:,}.")
    return int(value) if spec.whole else float(value)


def check(environ=None) -> list[str]:
    """Every setting's problem, in words (empty when all are fine)."""
    problems = []
    for name in SETTINGS:
        try:
            setting(name, environ)
        except SettingError as error:
            problems.append(str(error))
    return problems


SWITCH_ON, SWITCH_OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def switch(name: str, environ=None) -> bool:
    """An on/off environment setting (DOLLY_SHARE=1); anything but the words it accepts is a SettingError,
    so a typo does not silently mean off."""
    raw = (os.environ if environ is None else environ).get(name, "")
    word = raw.strip().lower()
    if word in SWITCH_ON or word in SWITCH_OFF:
        return word in SWITCH_ON
    raise SettingError(f"{name} must be one of {', '.join(SWITCH_ON)} (on) or {', '.join(w for w in SWITCH_OFF if w)} "
                       f"or empty (off), got {raw!r:.80}.")
