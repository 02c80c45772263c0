"""The conversion settings, and the reasoning format and token-data mode chosen from them once."""

from dataclasses import dataclass, field

from ngym.protocol.reasoning import ReasoningFormat, reasoning_format
from ngym.protocol.tokens import TokenDataMode, token_data_mode


@dataclass(frozen=True, slots=True)
class ConversionOptions:
    """Built once, at the model server's start-up, from its three settings:

    ConversionOptions(uses_reasoning_parser=..., replace_developer_role_with_system=...,
    return_token_id_information=...)

    `reasoning` and `tokens` are the objects chosen from the first and last setting (as vLLM picks its
    reasoning and tool parsers); the conversion functions call them instead of testing the settings.
    """

    uses_reasoning_parser: bool = True
    replace_developer_role_with_system: bool = False
    return_token_id_information: bool = False
    reasoning: ReasoningFormat = field(init=False, repr=False, compare=False)
    tokens: TokenDataMode = field(init=False, repr=False, compare=False)
    # False when a Chat answer goes back to the caller exactly as vLLM sent it.
    edits_caller_answer: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reasoning = reasoning_format(self.uses_reasoning_parser)
        tokens = token_data_mode(self.return_token_id_information)
        object.__setattr__(self, "reasoning", reasoning)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "edits_caller_answer", reasoning.edits_caller_answer or tokens.enabled)
