"""The viewer's token view (tokenizer.json decoding, prompt continuity) and conversation view."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from ngym.config.errors import ConfigError
from ngym.viewer.conversation import TEXT_LIMIT, rollout_view, value_at
from ngym.viewer.rows import _scan_output, turn_ranges
from ngym.viewer.tokens import Vocab, byte_level_alphabet, token_turns
from ngym.vllm.process import find_vllm_python
from testkit.viewer_rows import weather_row

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "models" / "weather-policy"
TEXTS = ["What's the weather in Zürich?", '<tool_call>\n{"name": "get_weather"}</tool_call>', "東京 ☀ naïve"]


def test_the_byte_level_alphabet_covers_every_byte_once() -> None:
    alphabet = byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256))
    assert alphabet["Ġ"] == ord(" ") and alphabet["Ċ"] == ord("\n") and alphabet["a"] == ord("a")


@pytest.fixture(scope="module")
def hf_ids() -> dict[str, Any]:
    """What Hugging Face's own tokenizers library makes of TEXTS with the policy's tokenizer (in .venv-vllm)."""
    python = find_vllm_python(ROOT)
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("CI must check the decoder against Hugging Face's tokenizers, but .venv-vllm is absent")
        pytest.skip("the tokenizers library lives in .venv-vllm, which is absent")
    script = (
        "import json, sys; from tokenizers import Tokenizer; t = Tokenizer.from_file(sys.argv[1]); "
        "texts = json.loads(sys.argv[2]); ids = [t.encode(x, add_special_tokens=False).ids for x in texts]; "
        "print(json.dumps({'ids': ids, 'decoded': [t.decode(i, skip_special_tokens=False) for i in ids], "
        "'pieces': [[t.id_to_token(j) for j in i] for i in ids]}))"
    )
    done = subprocess.run(
        [str(python), "-c", script, str(POLICY / "tokenizer.json"), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(done.stdout))


def test_decoding_matches_hugging_face_tokenizers(hf_ids: dict[str, Any]) -> None:
    vocab = Vocab.load(POLICY)
    for ids, decoded in zip(hf_ids["ids"], hf_ids["decoded"], strict=True):
        assert vocab.decode(ids) == decoded
    first = hf_ids["ids"][1]
    assert vocab.text(first[0]) == "<tool_call>"  # an added token is its content


def test_special_tokens_are_known(tmp_path: Path) -> None:
    vocab = Vocab.load(POLICY)
    data = orjson.loads((POLICY / "tokenizer.json").read_bytes())
    special = {token["id"] for token in data["added_tokens"] if token["special"]}
    assert vocab.special == special and special


def test_sentencepiece_style_vocabularies(tmp_path: Path) -> None:
    data = {
        "model": {
            "type": "BPE",
            "vocab": {"▁the": 0, "▁wea": 1, "ther": 2, "<0x0A>": 3, "<0xC3>": 4, "<0xBC>": 5},
            "byte_fallback": True,
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}],
        },
        "added_tokens": [{"id": 6, "content": "<s>", "special": True}],
    }
    (tmp_path / "tokenizer.json").write_bytes(orjson.dumps(data))
    vocab = Vocab.load(tmp_path)
    assert vocab.decode([6, 0, 1, 2, 3, 4, 5]) == "<s> the weather\nü"
    assert vocab.text(4) == "\\xc3"  # half a character, shown as its byte


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no tokenizer.json there"), (b"{", "cannot read"), (b'{"model": {"vocab": 3}}', "not a mapping")],
)
def test_a_bad_tokenizer_is_a_clear_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    if content is not None:
        (tmp_path / "tokenizer.json").write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        Vocab.load(tmp_path)


def test_each_turn_shows_only_what_its_prompt_adds() -> None:
    row = weather_row(3, 1, city="Oslo", reward=1.0, tokens=True)
    call, message = row["response"]["output"][0], row["response"]["output"][2]
    answer = token_turns(row, None)
    first, second = answer["turns"]
    assert first["prompt"] == call["prompt_token_ids"] and first["carried"] == 0 and first["continues"]
    carried = len(call["prompt_token_ids"]) + len(call["generation_token_ids"])
    assert second["carried"] == carried and second["prompt"] == message["prompt_token_ids"][carried:]
    assert second["generation"] == message["generation_token_ids"]
    assert second["logprobs"] == message["generation_log_probs"]
    assert "pieces" not in answer  # IDs only without a tokenizer


def test_a_prompt_that_does_not_continue_the_turn_before_is_flagged() -> None:
    row = weather_row(3, 1, city="Oslo", reward=1.0, tokens=True)
    message = row["response"]["output"][2]
    message["prompt_token_ids"][5] += 1  # the template re-rendered an earlier turn differently
    second = token_turns(row, Vocab.load(POLICY))["turns"][1]
    assert not second["continues"] and second["diverges_at"] == 5
    assert second["prompt"] == message["prompt_token_ids"] and second["carried"] == 0


def test_turns_group_model_items_and_token_data_ends_a_turn() -> None:
    items = [
        {"type": "reasoning"},
        {"type": "function_call"},
        {"type": "function_call_output"},
        {"type": "message", "role": "assistant", "generation_token_ids": [1]},
        {"type": "message", "role": "assistant"},
    ]
    assert turn_ranges(items) == [(0, 2), (3, 4), (4, 5)]
    assert _scan_output(items)[:3] == (3.0, 1.0, 1.0)  # the index's one-pass count agrees


def test_the_conversation_pins_the_verdict_and_groups_turns() -> None:
    row = weather_row(3, 1, city="Oslo", reward=1.0, tokens=True, reasoning="Think first.")
    view = rollout_view(row)
    assert view["reward"] == 1.0 and view["task"] == 3 and view["fields"]["called_city"] == "Oslo"
    assert [item["role"] for item in view["input"]] == ["developer", "user"]
    first, second = view["turns"]
    assert [item["kind"] for item in first["items"]] == ["reasoning", "tool_call"]
    assert first["items"][1]["arguments"] == {"text": '{\n  "city": "Oslo"\n}', "json": True}
    assert [item["kind"] for item in first["tool_outputs"]] == ["tool_output"]
    assert second["items"][0]["text"].startswith("The weather in Oslo")
    assert first["tokens"]["prompt"] == len(row["response"]["output"][1]["prompt_token_ids"])
    assert "prompt_token_ids" not in orjson.dumps(view).decode()  # the token view asks for them


def test_long_values_are_cut_with_the_path_to_the_whole() -> None:
    row = weather_row(0, 0, city="Oslo", reward=1.0, answer="x" * (TEXT_LIMIT + 10))
    answer = rollout_view(row)["turns"][1]["items"][0]
    assert answer["cut"] and answer["length"] == TEXT_LIMIT + 10 and len(answer["text"]) == TEXT_LIMIT
    assert value_at(row, answer["path"]) == "x" * (TEXT_LIMIT + 10)
    with pytest.raises(KeyError, match="9"):
        value_at(row, "response.output.9.content")
