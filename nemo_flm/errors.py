"""The errors bad input raises: one line naming the problem and the fix."""


class ConfigError(ValueError):
    """A bad configuration value; the message is one line with the fix."""


class DataError(ValueError):
    """Bad or missing input data; the message is one line with the fix."""
