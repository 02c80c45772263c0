"""The chat format: ChatML turns, Hermes-style tools and tool calls, Qwen2.5-style tool responses."""

from __future__ import annotations

from testkit.hf_model_files import ENDOFTEXT, IM_END, IM_START, SPECIAL_TOKENS

__all__ = ["CHAT_TEMPLATE", "ENDOFTEXT", "IM_END", "IM_START", "SPECIAL_TOKENS", "TAG_TOKENS"]

# Added but not "special", so they survive detokenisation whatever skip_special_tokens says: vLLM's hermes
# parser looks for them in the generated text.
TAG_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

# Rules the template follows, so that a history renders to exactly the tokens the model generated:
# - the assistant's tool call is `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`, with the
#   arguments string (vLLM's hermes parser re-serialises them as json.dumps does) inserted verbatim;
# - no for-loop over message content, so vLLM treats content as a string (text parts joined by "\n");
# - developer messages become system turns; consecutive tool results share one user turn.
CHAT_TEMPLATE = r"""{%- macro text(content) -%}
{%- if content is string -%}{{- content -}}
{%- elif content -%}{{- content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\n') -}}
{%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(system='', first=0) -%}
{%- if messages and messages[0].role in ['system', 'developer'] -%}
{%- set ns.system = text(messages[0].content) -%}
{%- set ns.first = 1 -%}
{%- endif -%}
{%- if tools -%}
{{- '<|im_start|>system\n' -}}
{%- if ns.system -%}{{- ns.system + '\n\n' -}}{%- endif -%}
{{- '# Tools\n\nYou may call these functions:\n<tools>' -}}
{%- for tool in tools -%}
{{- '\n' + ((tool.function if tool.function is defined else tool) | tojson) -}}
{%- endfor -%}
{{- '\n</tools>\n\nTo call one, reply with <tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    '\n</tool_call><|im_end|>\n' -}}
{%- elif ns.system -%}
{{- '<|im_start|>system\n' + ns.system + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages[ns.first:] -%}
{%- if message.role == 'assistant' -%}
{{- '<|im_start|>assistant\n' -}}
{%- set content = text(message.content) -%}
{{- content -}}
{%- for call in message.tool_calls or [] -%}
{%- set fn = call.function if call.function is defined else call -%}
{%- if content or not loop.first -%}{{- '\n' -}}{%- endif -%}
{{- '<tool_call>\n{"name": ' + (fn.name | tojson) + ', "arguments": ' -}}
{{- fn.arguments if fn.arguments is string else (fn.arguments | tojson) -}}
{{- '}\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' + text(message.content) + '\n</tool_response>' -}}
{%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- else -%}
{{- '<|im_start|>' + ('system' if message.role == 'developer' else message.role) + '\n' -}}
{{- text(message.content) + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""
