"""The one error type a bad configuration raises."""
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
