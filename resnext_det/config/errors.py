"""The one error type a bad configuration raises."""
import math

from ..errors import UserError


class ConfigError(UserError, ValueError):
    """A config value that cannot build a model.

    The message names the key, the value found and the values that work, so that the
    user can fix the YAML or the command line without reading a traceback.
    """

    def __init__(self, key, value, expected, hint=""):
        self.key, self.value, self.expected = key, value, expected
        msg = f"{key}={value!r} is not valid: expected {expected}."
        super().__init__(msg + (f" {hint}" if hint else ""))


def check_choice(key, value, allowed):
    """`value`, unless it is not one of `allowed`: then a ConfigError naming `key`."""
    if value not in allowed:
        raise ConfigError(key, value, f"one of {list(allowed)}")
    return value


def is_int(value):
    """Whether `value` is an int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    """Whether `value` is a finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value, low):
    """Whether `value` is an int (not a bool) >= `low`."""
    return is_int(value) and value >= low


def is_positive(value):
    """Whether `value` is a finite number > 0 (not a bool)."""
    return is_number(value) and value > 0


def check_whole(key, value, low, meaning=""):
    """`value`, unless it is not a whole number >= `low`: then a ConfigError naming `key`."""
    if not is_whole(value, low):
        raise ConfigError(key, value, f"a whole number >= {low}{meaning}")
    return value


def check_number(key, value, low, high=math.inf, meaning=""):
    """`value`, unless it is not a finite number in [low, high): then a ConfigError naming
    `key` (torch's optimizer raises a bare ValueError; a negative GAMMA or an inf BASE_LR
    trains silently to a NaN)."""
    if not (is_number(value) and low <= value < high):
        raise ConfigError(key, value, f"a finite number {meaning}")
    return value


def check_bool(key, value):
    """`value`, unless it is not True or False: then a ConfigError naming `key`."""
    if not isinstance(value, bool):
        raise ConfigError(key, value, "True or False")
    return value
