"""The error a bad configuration raises: one line naming the problem and the fix."""


class ConfigError(ValueError):
    """A bad configuration value; the message is one line with the fix."""
