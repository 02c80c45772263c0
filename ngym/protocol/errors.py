"""The error for bad caller input (vLLM's own bad token data is `tokens.TokenDataError`)."""

STATELESS = "this server is stateless: send the whole conversation in `input` instead"


class ConversionError(ValueError):
    """Bad caller input.

    `.param` is the dotted/indexed path of the offending field, e.g. 'input[3].call_id'.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message if param is None else f"{param}: {message}")
        self.message = message
        self.param = param
