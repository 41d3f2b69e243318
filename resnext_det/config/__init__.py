from .defaults import add_resnext_config, resnext_defaults
from .errors import ConfigError

__all__ = ["add_resnext_config", "resnext_defaults", "ConfigError"]
