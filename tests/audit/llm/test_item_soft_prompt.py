"""The fair soft prompt on an item-token ``hf`` model (tiny random Llama): a prefix of real token
embeddings is exactly those tokens inserted after the prompt's first token in scoring,
``embed_user`` and ``token_logprobs``; the trainer's view of the model reads the user as
``embed_user`` does; the fair-prompt variant trains a prefix on a LoRA-tuned item model, leaves
its weights unchanged and caches the prefix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audit.interface import RecRequest
from audit.llm import scoring
from tests.audit.llm.tiny_llama import build_hf

LORA = {"lora": {"epochs": 1, "layers": None, "lr": 5e-3, "batch_size": 8, "r": 4}}
FAIR = {"fair-prompt": {"attributes": ["gender"], "epochs": 2, "prefix_len": 3, "batch_size": 8, "lr": 0.05}}


@pytest.fixture(scope="module")
def plain(tiny_llama_dir: Path, tiny_dataset, tmp_path_factory: pytest.TempPathFactory):
    return build_hf(tiny_llama_dir, tiny_dataset, tmp_path_factory.mktemp("items"), items="tokens")


def inserted(ids: list[int], tokens: list[int]) -> list[int]:
    return [ids[0], *tokens, *ids[1:]]


def request(dataset, user: str) -> RecRequest:
    titles = dataset.item_titles
    return RecRequest(history=tuple(titles[i] for i in dataset.sequences[user].train[-5:]),
                      profile=dict(dataset.user_profiles.get(user, {})), user=user)


def test_a_prefix_of_token_embeddings_equals_inserting_the_tokens(plain, tiny_dataset) -> None:
    tokens = plain.encoding.plain_ids(" movies")[:2] or [5]
    prefixed = plain.with_soft_prefix(plain.model.get_input_embeddings().weight[tokens].detach())
    assert plain.soft_prefix is None  # the copy, not the original, carries the prefix
    reqs = [request(tiny_dataset, u) for u in tiny_dataset.user_ids()[:3]]
    literal = scoring.last_hidden(plain.lm, [inserted(plain.request_item_ids(r), tokens) for r in reqs],
                                  batch_size=4, prompts=True)
    np.testing.assert_allclose(prefixed.embed_user(reqs), literal, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        expected = torch.log_softmax(plain.item_lm.head(torch.from_numpy(literal).float()), -1).numpy()
    np.testing.assert_allclose(prefixed.item_logprobs(reqs), expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(prefixed.embed_user(reqs), plain.embed_user(reqs))

    text = "".join(plain.render_sequence(list(tiny_dataset.sequences["2"].train[:4]), {}, tiny_dataset.item_titles))
    ids = torch.tensor([inserted(plain.text_item_ids(text), tokens)])
    with torch.no_grad():
        hidden = plain.item_lm.hidden(ids)[0]
    keep = [0, *range(1 + len(tokens), ids.shape[1])]  # the text's own positions
    nxt = ids[0, keep][1:]
    want = []
    for h, t in zip(hidden[keep][:-1], nxt):
        head, off = (plain.item_lm.head, plain.vocab.offset) if t >= plain.vocab.offset else \
            (plain.item_lm.lm.get_output_embeddings(), 0)
        want.append(float(torch.log_softmax(head(h).float(), -1)[t - off]))
    np.testing.assert_allclose(prefixed.token_logprobs([text])[0], want, rtol=1e-4, atol=1e-4)


def test_the_trainer_reads_the_user_where_embed_user_does(plain, tiny_dataset) -> None:
    target = plain.soft_prompt_target(tiny_dataset)
    users = tiny_dataset.user_ids()[:3]
    data = target.training_data({u: tiny_dataset.sequences[u].train for u in users})
    examples = data.epoch_examples(np.random.default_rng(0))
    assert sorted(str(e.user) for e in examples) == sorted(users)  # one example per user: the newest window
    input_ids, targets = data.collate(examples)
    with torch.no_grad():
        loss, reps = target.forward(input_ids, targets, None)
    neutral = [RecRequest(history=tuple(tiny_dataset.item_titles[i] for i in
                                        tiny_dataset.sequences[str(e.user)].train[-plain.config.history:]))
               for e in examples]
    np.testing.assert_allclose(reps.numpy(), plain.embed_user(neutral), rtol=1e-4, atol=1e-4)
    assert float(loss) > 0


def test_the_fair_prompt_trains_on_a_lora_tuned_item_model_and_is_cached(tiny_llama_dir: Path, tiny_dataset,
                                                                        tmp_path: Path) -> None:
    base = build_hf(tiny_llama_dir, tiny_dataset, tmp_path, [LORA], items="tokens")
    weights = {k: v.clone() for k, v in base.item_lm.state_dict().items()}
    fair = build_hf(tiny_llama_dir, tiny_dataset, tmp_path, [LORA, FAIR], items="tokens")
    info = fair.info["fair_prompt"]
    assert info["trained_now"] and info["steps"] > 0 and info["users"] > 0
    assert fair.soft_prefix is not None and fair.soft_prefix.shape == (3, base.model.config.hidden_size)
    for k, v in fair.item_lm.state_dict().items():  # the item model itself is untouched
        torch.testing.assert_close(v, weights[k])
    again = build_hf(tiny_llama_dir, tiny_dataset, tmp_path, [LORA, FAIR], items="tokens")
    assert not again.info["fair_prompt"]["trained_now"]
    torch.testing.assert_close(again.soft_prefix, fair.soft_prefix)
    req = request(tiny_dataset, tiny_dataset.user_ids()[0])
    assert fair.generate([req], 2) and not np.allclose(fair.embed_user([req]), base.embed_user([req]))
