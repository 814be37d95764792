"""SmolLM2-135M-Instruct on this machine, measured side by side in one run:

- generation: generated tokens/s and s/user at batch 1 vs 8 vs the adapter's default batch (16),
  k = 10 titles, 10-item history window, greedy, stopping once k lines are written;
- candidate scoring: candidates scored/s for the adapter's shared-prompt path (prompt once,
  candidates side by side under a block-diagonal 4-D mask, cache cropped not copied) vs the old
  path (prompt cache deep-copied and repeated per candidate batch) vs one full forward per
  candidate (``naive``, on the first ``--naive`` candidates), with the largest score difference;
- LoRA fine-tuning: examples/s of training steps on real training examples with the default LoRA
  (r 8, all projections of the last 8 layers) vs LoRA on all 30 layers.

    recaudit fetch smollm2-135m && .venv/bin/python benchmarks/bench_llm.py [--parts generate,score,train]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from audit.adapters.hf import HFAdapter, HFConfig
from audit.config import validate_config
from audit.data.loaders import load_dataset
from audit.interface import RecRequest
from audit.llm import scoring


def old_repeat_path(rec: HFAdapter, prompt_ids: list[int], conts: list[list[int]], bs: int = 64) -> np.ndarray:
    """The pre-change shared path: the prompt's KV cache deep-copied and repeated per batch."""
    scores = np.zeros(len(conts))
    prompt = torch.tensor([prompt_ids])
    with torch.no_grad():
        first = rec.model(input_ids=prompt, use_cache=True)
        past = first.past_key_values
        last = torch.log_softmax(first.logits[0, -1].float(), -1)
        plen = len(prompt_ids)
        for s in range(0, len(conts), bs):
            batch = conts[s:s + bs]
            ids, mask = rec.lm.pad(batch, "right")
            cache = copy.deepcopy(past)
            cache.batch_repeat_interleave(len(batch))
            full = torch.cat([torch.ones((len(batch), plen), dtype=torch.long), mask], 1)
            pos = torch.arange(plen, plen + ids.shape[1]).expand(len(batch), -1)
            logp = torch.log_softmax(rec.model(input_ids=ids, attention_mask=full, past_key_values=cache,
                                               position_ids=pos).logits.float(), -1)
            tot = last[ids[:, 0]] + (logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]).sum(1)
            scores[s:s + len(batch)] = tot.numpy()
    return scores


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gen-users", type=int, default=16)
    ap.add_argument("--score-users", type=int, default=4)
    ap.add_argument("--naive", type=int, default=20, help="candidates per user for the naive path")
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="generate,score,train",
                    help="comma-separated subset of generate, score, train")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)
    ds = load_dataset("ml-100k")
    rec = HFAdapter.build(validate_config(HFConfig, {"model": "smollm2-135m", "history": 10}, "bench"))
    titles = ds.item_titles
    users = ds.sample_users(max(args.gen_users, args.score_users), 0)
    reqs = [RecRequest(history=tuple(titles[i] for i in ds.sequences[u].test_history), user=u) for u in users]
    print(f"SmolLM2-135M-Instruct, {torch.get_num_threads()} threads, fp32, history window 10")

    gen_reqs = reqs[:args.gen_users] if "generate" in parts else []
    for bs in (1, 8, 16) if gen_reqs else ():
        rec.config = rec.config.model_copy(update={"batch_size": bs})
        t0 = time.perf_counter()
        gens = rec.generate_detailed(gen_reqs, 10)
        dt = time.perf_counter() - t0
        toks = sum(len(rec.tokenizer(g.raw, add_special_tokens=False)["input_ids"]) for g in gens)
        items = np.mean([len(g.items) for g in gens])
        print(f"generate batch {bs}: {len(gen_reqs)} users in {dt:.1f} s = {dt / len(gen_reqs):.2f} s/user, "
              f"{toks / dt:.1f} generated tokens/s, {items:.1f} titles/user")

    t_shared = t_old = t_naive = 0.0
    n_shared = n_naive = 0
    diff_old = diff_naive = 0.0
    for u, req in zip(users[:args.score_users], reqs[:args.score_users]) if "score" in parts else ():
        cands = [titles[i] for i in [ds.sequences[u].test, *ds.negatives(u, 99, 0)]]
        prompt_ids = rec.score_prompt_ids(req) + rec.encoding.marker_ids(1)
        conts = [rec.encoding.continuation_ids(t) for t in cands]
        t0 = time.perf_counter(); shared = scoring.score_shared(rec.lm, prompt_ids, conts); t_shared += time.perf_counter() - t0
        t0 = time.perf_counter(); old = old_repeat_path(rec, prompt_ids, conts); t_old += time.perf_counter() - t0
        t0 = time.perf_counter(); naive = scoring.score_naive(rec.lm, prompt_ids, conts[:args.naive])
        t_naive += time.perf_counter() - t0
        n_shared += len(conts)
        n_naive += args.naive
        diff_old = max(diff_old, float(np.abs(old - shared).max()))
        diff_naive = max(diff_naive, float(np.abs(naive - shared[:args.naive]).max()))
    if "score" in parts:
        print_scoring(n_shared / t_shared, n_shared / t_old, n_naive / t_naive, diff_old, diff_naive)
    if "train" in parts:
        bench_training(rec, ds, users, args.train_steps)


def print_scoring(r_shared: float, r_old: float, r_naive: float, diff_old: float, diff_naive: float) -> None:
    print(f"score: shared {r_shared:.1f} candidates/s, old copy+repeat {r_old:.1f}/s, naive {r_naive:.1f}/s; "
          f"shared/old {r_shared / r_old:.2f}x, shared/naive {r_shared / r_naive:.2f}x; "
          f"max |diff| vs old {diff_old:.1e}, vs naive {diff_naive:.1e} (nats)")


def bench_training(rec: HFAdapter, ds, users: list[str], train_steps: int) -> None:
    """LoRA step time on real examples: the default (last 8 layers) vs all layers."""
    from audit.llm.examples import LLMStageData
    from audit.llm.lora import LoraOptions, attach_lora
    from audit.llm.trainable import LoraTrainable

    titles = ds.item_titles
    base = rec.base_parts()
    seqs = {u: tuple(ds.sequences[u].train) for u in users}
    data = LLMStageData(seqs, {u: ds.user_profiles.get(u, {}) for u in seqs}, dict(titles), base.encode_prompt,
                        base.encode_answer, history=10, targets=10, examples_per_user=1, attribute_dropout=0.5,
                        pad_id=base.pad_id)
    examples = data.epoch_examples(np.random.default_rng(0))
    batch = data.collate(examples[:8])
    print(f"LoRA examples: mean {np.mean([len(e) for e in examples]):.0f} tokens")
    rates = {}
    for name, layers in (("last 8 layers (default)", 8), ("all 30 layers", None)):
        model = copy.deepcopy(rec.model)
        trainable = LoraTrainable(attach_lora(model, LoraOptions(layers=layers)))
        opt = torch.optim.AdamW(trainable.parameter_groups(0.0), lr=1e-4)
        trainable.module.train()
        times = []
        for step in range(train_steps + 1):
            t0 = time.perf_counter()
            loss = trainable.loss(*batch)
            opt.zero_grad(); loss.backward(); opt.step()
            if step:  # the first step warms up
                times.append(time.perf_counter() - t0)
        rates[name] = 8 / float(np.mean(times))
        print(f"LoRA step, {name}: {np.mean(times):.2f} s/step of 8 = {rates[name]:.2f} examples/s")
    a, b = rates.values()
    print(f"LoRA last-8 / all-layers speed: {a / b:.2f}x")


if __name__ == "__main__":
    main()
