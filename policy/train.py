"""Train the weather policy from scratch on CPU: tokenizer, synthetic data, a tiny Qwen2, a quick self-check.

Run from the repository root with the vLLM venv (torch, transformers, tokenizers):
    .venv-vllm/bin/python -m policy.train --out models/weather-policy
Seeded and single-process; with the same thread count the weights come out the same.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy.data import HELDOUT_JSONL, heldout_rows, training_samples, write_jsonl
from policy.encode import IGNORE, Encoded, encode, render
from policy.model import MAX_POSITIONS, policy_config
from policy.selfcheck import check_heldout
from policy.tokenizer import train_tokenizer
from testkit.hf_model_files import write_generation_config

SEED = 1234
HELDOUT_SEED = 6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models/weather-policy"))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--conversations", type=int, default=24000, help="synthetic training conversations")
    parser.add_argument("--steps", type=int, default=2100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--decay", type=float, default=0.3, help="share of the steps the learning rate decays over")
    parser.add_argument("--min-count", type=int, default=50, help="occurrences that make a word one token")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-heldout", action="store_true", help=f"also (re)write {HELDOUT_JSONL.name}")
    return parser.parse_args(argv)


def encode_all(tokenizer: Any, samples: list[Any]) -> list[Encoded]:
    from tqdm import tqdm

    return [encode(tokenizer, sample) for sample in tqdm(samples, desc="encode", unit="conv", mininterval=2)]


def check_tokenizer_agrees(out_dir: Path, texts: list[str], tokenizer: Any) -> None:
    """vLLM tokenises with transformers' AutoTokenizer: it must give exactly the training ids."""
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(out_dir))
    for text in texts:
        ids = tokenizer.encode(text).ids
        if loaded.encode(text, add_special_tokens=False) != ids:
            raise RuntimeError(f"transformers tokenises differently from the trained tokenizer: {text!r}")
        if loaded.decode(ids) != text:
            raise RuntimeError(f"transformers does not decode the tokens back to the text: {text!r}")


@dataclass(frozen=True)
class Batch:
    """Conversations that share their system turn: it is computed once and its keys/values reused by all."""

    prefix: list[int]
    suffixes: list[Encoded]


def batch_plan(data: list[Encoded], steps: int, batch_size: int, seed: int) -> list[Batch]:
    """Shuffled epochs; each epoch cuts every shared-prefix group into batches, then shuffles the batches."""
    groups: dict[tuple[int, ...], list[Encoded]] = {}
    for e in data:
        groups.setdefault(tuple(e.ids[: e.prefix_length]), []).append(e)
    rng = random.Random(seed)
    plan: list[Batch] = []
    while len(plan) < steps:
        epoch = []
        for prefix, members in groups.items():
            members = list(members)
            rng.shuffle(members)
            epoch += [Batch(list(prefix), members[i : i + batch_size]) for i in range(0, len(members), batch_size)]
        rng.shuffle(epoch)
        plan += epoch
    return plan[:steps]


def batch_loss(model: Any, batch: Batch) -> Any:
    import torch
    from transformers.cache_utils import DynamicCache

    size = len(batch.suffixes)
    prefix = model.model(input_ids=torch.tensor([batch.prefix]), use_cache=True).past_key_values
    cache = DynamicCache(config=model.config)
    for index, layer in enumerate(prefix.layers):
        cache.update(layer.keys.expand(size, -1, -1, -1), layer.values.expand(size, -1, -1, -1), index)
    width = max(len(e.ids) - e.prefix_length for e in batch.suffixes)
    ids = torch.zeros((size, width), dtype=torch.long)
    labels = torch.full((size, width), IGNORE, dtype=torch.long)
    for row, e in enumerate(batch.suffixes):
        ids[row, : len(e.ids) - e.prefix_length] = torch.tensor(e.ids[e.prefix_length :])
        labels[row, : len(e.ids) - e.prefix_length] = torch.tensor(e.targets[e.prefix_length :])
    # The suffix's first token is <|im_start|>, never a label, so the prefix's own logits are not needed; nor
    # are those of positions with nothing to predict (most of them): the output layer runs on the rest only.
    hidden = model.model(input_ids=ids, past_key_values=cache).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    wanted = targets != IGNORE
    return torch.nn.functional.cross_entropy(model.lm_head(hidden[wanted]), targets[wanted])


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Warm-up, a constant rate (copying names is learnt in a late jump, which a rate already decaying delays),
    then a cosine decay over the last `--decay` share of the steps, down to 5%."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    decay_start = args.steps - int(args.decay * args.steps)
    if step < decay_start:
        return args.lr
    progress = (step - decay_start) / max(1, args.steps - decay_start)
    return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: Any, data: list[Encoded], args: argparse.Namespace) -> None:
    import torch
    from tqdm import tqdm

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    model.train()
    progress = tqdm(batch_plan(data, args.steps, args.batch_size, args.seed), desc="train", mininterval=5)
    smoothed = None
    for step, batch in enumerate(progress):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        loss = batch_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
        progress.set_postfix(loss=f"{smoothed:.4f}", lr=f"{lr_at(step, args):.1e}", refresh=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from transformers import Qwen2ForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.monotonic()

    out_dir = args.out.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        samples = training_samples(args.conversations, args.seed)
        texts = [render(s.messages, s.tools) for s in samples]
        names = [s.city for s in samples]
        tokenizer = train_tokenizer(texts, names, args.min_count, out_dir=work, max_length=MAX_POSITIONS)
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        config = policy_config(vocab)
        # With config.json beside it, transformers loads the tokenizer as vLLM will (as a Qwen2Tokenizer).
        config.save_pretrained(str(work))
        check_tokenizer_agrees(work, texts[:500], tokenizer)
        data = encode_all(tokenizer, samples)
        model = Qwen2ForCausalLM(config)
        n_params = sum(p.numel() for p in model.parameters())
        lengths = sorted(len(e.ids) for e in data)
        print(
            f"vocab {len(vocab)}, {n_params / 1e6:.2f}M parameters, {len(data)} conversations of "
            f"{lengths[len(lengths) // 2]} tokens (median, max {lengths[-1]})",
            flush=True,
        )
        train(model, data, args)

        # vLLM serves it in bfloat16: save that, and check what will actually be served.
        model = model.to(torch.bfloat16)
        model.save_pretrained(str(work), safe_serialization=True)
        write_generation_config(work, vocab)
        rows = heldout_rows(HELDOUT_SEED)
        if args.write_heldout:
            write_jsonl(HELDOUT_JSONL, rows)
        check_heldout(model.float().eval(), tokenizer, rows)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out_dir} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
