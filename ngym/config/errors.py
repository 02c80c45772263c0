class ConfigError(Exception):
    """A configuration mistake the user must fix; the message names the file, key or override at fault."""
