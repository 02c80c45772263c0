"""The weather policy's training data and committed files agree with the environment they are for."""

from __future__ import annotations

import json
import re
from pathlib import Path

from policy.cities import HELDOUT_CITIES, HELDOUT_KEYS, TRAIN_CITIES
from policy.data import EXAMPLE_JSONL, HELDOUT_JSONL, heldout_rows, training_samples
from policy.template import CHAT_TEMPLATE
from policy.train import HELDOUT_SEED, SEED
from resources_servers.simple_weather import app as weather


def test_heldout_file_is_what_the_training_script_writes() -> None:
    rows = [json.loads(line) for line in HELDOUT_JSONL.read_text().splitlines()]
    assert rows == heldout_rows(HELDOUT_SEED)
    assert len(rows) == 100
    assert len({weather.normalize_city(row["expected_city"]) for row in rows}) == 100
    example = json.loads(EXAMPLE_JSONL.read_text().splitlines()[0])["responses_create_params"]
    for row in rows:
        params = row["responses_create_params"]
        assert params["tools"] == example["tools"]
        assert row["expected_city"] in params["input"][-1]["content"]


def test_heldout_cities_are_never_in_training_data() -> None:
    assert not {c.lower() for c in TRAIN_CITIES} & {c.lower() for c in HELDOUT_CITIES}
    for sample in training_samples(3000, SEED):
        text = json.dumps(sample.messages, ensure_ascii=False).lower()
        assert not [key for key in HELDOUT_KEYS if key in text], sample.city


def test_training_conversations_match_simple_weather() -> None:
    """The tool call, the tool's answer and the final answer are what the agent loop and the server produce."""
    for sample in training_samples(300, SEED):
        user, call, output, answer = sample.messages[-4:]
        assert user["role"] == "user" and sample.city in user["content"]
        arguments = json.loads(call["tool_calls"][0]["function"]["arguments"])
        assert arguments == {"city": sample.city}
        tool_answer = json.loads(output["content"])
        assert tool_answer == {"city": sample.city, "weather_description": weather.weather_description(sample.city)}
        assert output["tool_call_id"] == call["tool_calls"][0]["id"]
        final = answer["content"]
        rollout = {
            "output": [
                {"type": "function_call", "name": "get_weather", "call_id": "c", "arguments": json.dumps(arguments)},
                {"type": "function_call_output", "call_id": "c", "output": output["content"]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": final}]},
            ]
        }
        params = {"input": [{"role": "user", "content": user["content"]}]}
        assert weather.score_rollout(params, rollout, sample.city)["reward"] == 1.0


def test_committed_policy_uses_the_project_chat_template() -> None:
    policy_dir = Path(__file__).resolve().parents[2] / "models" / "weather-policy"
    config = json.loads((policy_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE
    model = json.loads((policy_dir / "config.json").read_text())
    assert model["architectures"] == ["Qwen2ForCausalLM"]
    assert model["hidden_size"] // model["num_attention_heads"] >= 32  # what vLLM's CPU attention serves
    assert (policy_dir / "model.safetensors").stat().st_size < 16 * 2**20


def test_committed_tokenizer_spells_every_heldout_city_letter_by_letter() -> None:
    """No merge joins letters, and the whole-word tokens hold no word of a held-out city: an unseen city is
    spelt in the letters every training name is spelt in (policy/tokenizer.py)."""
    policy_dir = Path(__file__).resolve().parents[2] / "models" / "weather-policy"
    tokenizer = json.loads((policy_dir / "tokenizer.json").read_text())
    merges = tokenizer["model"]["merges"]
    assert merges and not [m for m in merges if any(c.isascii() and c.isalpha() for c in "".join(m))]
    words = {t["content"]: t for t in tokenizer["added_tokens"] if t["content"].isidentifier()}
    assert {"weather", "arguments", "get_weather", "city"} <= set(words)
    spaced = {t["content"] for t in tokenizer["added_tokens"] if t["content"].startswith(" ")}
    assert spaced == {" " + condition for condition in weather.CONDITIONS}
    assert all(t["single_word"] for t in words.values())  # never matched inside a longer word
    whole = {
        w for city in HELDOUT_CITIES for word in re.findall(r"\w+", city) for w in (word, word.lower(), word.upper())
    }
    # Only "city", the tool's own argument name: "kuwait city" asked in lower case keeps it as one token.
    assert whole & set(words) == {"city"}
