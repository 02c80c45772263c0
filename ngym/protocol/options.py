"""The conversion settings, and the reasoning formats and token-data mode chosen from them once."""

from dataclasses import dataclass, field

from ngym.protocol.reasoning import HistoryFormat, ReasoningFormat, history_format, reasoning_format
from ngym.protocol.tokens import TokenDataMode, token_data_mode


@dataclass(frozen=True, slots=True)
class ConversionOptions:
    """Built once, at the model server's start-up, from its settings (NeMo Gym's `vllm_model` keys):

    ConversionOptions(uses_reasoning_parser=..., replace_developer_role_with_system=...,
    return_token_id_information=..., uses_interleaved_reasoning=..., preserve_reasoning_in_assistant_content=...,
    sequential_reasoning_allowed=...)

    `reasoning` (vLLM's answers), `history` (earlier turns sent back) and `tokens` are the objects chosen from the
    settings (as vLLM picks its reasoning and tool parsers); the conversion functions call them instead of testing
    the settings.
    """

    uses_reasoning_parser: bool = True
    replace_developer_role_with_system: bool = False
    return_token_id_information: bool = False
    uses_interleaved_reasoning: bool = True
    preserve_reasoning_in_assistant_content: bool = False
    # False: a history ending in an assistant turn with only thinking is not sent back to the model for more.
    sequential_reasoning_allowed: bool = True
    reasoning: ReasoningFormat = field(init=False, repr=False, compare=False)
    history: HistoryFormat = field(init=False, repr=False, compare=False)
    tokens: TokenDataMode = field(init=False, repr=False, compare=False)
    # False when a Chat answer goes back to the caller exactly as vLLM sent it.
    edits_caller_answer: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reasoning = reasoning_format(self.uses_reasoning_parser)
        history = history_format(
            self.uses_reasoning_parser, self.uses_interleaved_reasoning, self.preserve_reasoning_in_assistant_content
        )
        tokens = token_data_mode(self.return_token_id_information)
        object.__setattr__(self, "reasoning", reasoning)
        object.__setattr__(self, "history", history)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "edits_caller_answer", reasoning.edits_caller_answer or tokens.enabled)
