"""The transformers engine on the real gemma-3-270m: batching, streaming, log-likelihood, hidden states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from secfm.engines import SamplingParams, get_engine, truncate_at_stop
from secfm.engines.base import LoglikResult
from secfm.errors import SecfmError

pytestmark = pytest.mark.slow

PROMPTS = [
    "CVE-2021-44228 is",
    "Phishing emails often",
    "The attacker used PowerShell to",
    "A SQL injection vulnerability allows",
    "Ransomware encrypts",
    "The firewall blocked traffic from 10.2.3.4 because",
    "MITRE ATT&CK technique T1059 describes",
    "Lateral movement",
]


def test_greedy_batch_of_8_equals_batch_of_1(engine):
    params = SamplingParams(max_new_tokens=12)
    batched = engine.generate(PROMPTS, params)
    single = [engine.generate([p], params)[0] for p in PROMPTS]
    assert batched == single
    assert all(isinstance(t, str) and t for t in batched)


def test_sampling_with_a_seed_repeats_and_differs_from_greedy(engine):
    sampled = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    first = engine.generate([PROMPTS[0]], sampled)
    again = engine.generate([PROMPTS[0]], sampled)
    assert first == again
    others = {engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=16, temperature=1.0, seed=s))[0] for s in range(4)}
    assert len(others) > 1


def test_stream_pieces_join_to_the_generated_text(engine):
    params = SamplingParams(max_new_tokens=16)
    pieces = list(engine.stream(PROMPTS[0], params))
    assert len(pieces) > 1
    assert "".join(pieces) == engine.generate([PROMPTS[0]], params)[0]


def test_stop_strings_cut_generate_and_stream(engine):
    params = SamplingParams(max_new_tokens=24, stop=("\n",))
    text = engine.generate([PROMPTS[0]], params)[0]
    streamed = "".join(engine.stream(PROMPTS[0], params))
    assert "\n" not in text and text == streamed


def test_truncate_at_stop_picks_the_earliest():
    assert truncate_at_stop("abc\nxyz END", ["END", "\n"]) == "abc"
    assert truncate_at_stop("abc", []) == "abc"


def test_a_stream_holds_back_only_a_tail_that_could_begin_a_stop_string():
    from secfm.engines.base import stop_prefix_len

    stops = ["<start_of_turn>", "\n\n", "\nQuestion:"]
    assert stop_prefix_len("T1190 is", stops) == 0  # the first words go out at once
    assert stop_prefix_len("T1190 is\n", stops) == 1 and stop_prefix_len("x <start_of", stops) == 9
    assert stop_prefix_len("x\nQuest", stops) == 6 and stop_prefix_len("a <b", stops) == 0


def _token_by_token(engine, context: str, continuation: str) -> float:
    """Reference: one full forward pass over context+continuation, summing continuation log-probs."""
    tok = engine.tokenizer
    ctx = tok(context)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.inference_mode():
        logprobs = torch.log_softmax(engine.model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(float(logprobs[len(ctx) + i - 1, t]) for i, t in enumerate(cont))


def test_loglikelihood_equals_token_by_token_computation(engine):
    context = "Question: Which tactic does T1059 belong to?\nAnswer:"
    continuations = [" Execution", " Persistence", " Lateral Movement", " Command and Control"]
    results = engine.loglikelihood(context, continuations)
    assert [r.continuation for r in results] == continuations
    for r in results:
        assert r.n_tokens == len(engine.tokenizer(r.continuation, add_special_tokens=False)["input_ids"])
        assert r.logprob == pytest.approx(_token_by_token(engine, context, r.continuation), abs=2e-3)
        assert r.logprob < 0 and r.per_token == pytest.approx(r.logprob / r.n_tokens)


def test_loglikelihood_long_context_past_the_sliding_window(engine):
    context = " ".join(["The adversary moved laterally using stolen credentials."] * 80)  # > 512 tokens
    assert engine.count_tokens(context) > 600
    results = engine.loglikelihood(context, [" Then they exfiltrated data.", " Then"])
    for r in results:
        assert r.logprob == pytest.approx(_token_by_token(engine, context, r.continuation), abs=5e-3)


def test_loglikelihood_batching_does_not_change_scores(engine):
    requests = [("The sky is", [" blue", " green"]), ("Malware is", [" software", " a fruit", ""])]
    together = engine.loglikelihood_many(requests)
    for (ctx, conts), got in zip(requests, together):
        alone = [engine.loglikelihood(ctx, [c])[0] for c in conts]
        assert [g.logprob for g in got] == pytest.approx([a.logprob for a in alone], abs=1e-4)
    assert together[1][2] == LoglikResult("", 0.0, 0, True, ())


def test_greedy_flag_matches_generation(engine):
    context = "CVE-2021-44228 is"
    greedy_text = engine.generate([context], SamplingParams(max_new_tokens=4))[0]
    result = engine.loglikelihood(context, [greedy_text])[0]
    assert result.is_greedy
    assert not engine.loglikelihood(context, [" banana banana"])[0].is_greedy


def test_hidden_states_shapes_and_pooling(engine):
    texts = ["powershell -enc SQBFAFgA", "Failed password for root from 10.0.0.5 port 22 ssh2", "hello"]
    hidden = engine.hidden_size()
    for pooling in ("mean", "last"):
        vectors = engine.hidden_states(texts, layer=9, pooling=pooling, batch_size=2)
        assert vectors.shape == (3, hidden) and vectors.dtype == np.float32
        assert np.isfinite(vectors).all()
    # padding does not leak: a text alone and inside a batch give the same vector
    alone = engine.hidden_states([texts[2]], layer=9, pooling="last")
    batched = engine.hidden_states(texts, layer=9, pooling="last")
    np.testing.assert_allclose(alone[0], batched[2], rtol=1e-3, atol=1e-3)
    mean = engine.hidden_states(texts, layer=9, pooling="mean")
    last = engine.hidden_states(texts, layer=9, pooling="last")
    assert not np.allclose(mean[1], last[1])


def test_hidden_states_stop_at_the_layer_and_match_a_full_pass(engine):
    text = "Adversaries may abuse PowerShell commands and scripts for execution."
    batch = engine.tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        full = engine.model(**batch, output_hidden_states=True)
    reference = full.hidden_states[4][0, -1].float().numpy()  # output of decoder layer 4
    got = engine.hidden_states([text], layer=4, pooling="last")[0]
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)
    n = engine.num_layers()
    assert engine.hidden_states([text], layer=-1, pooling="last").shape == (1, engine.hidden_size())
    with pytest.raises(SecfmError, match="out of range"):
        engine.hidden_states([text], layer=n + 1)
    with pytest.raises(SecfmError, match="pooling"):
        engine.hidden_states([text], pooling="max")  # type: ignore[arg-type]


def test_chat_template_from_the_registry(engine):
    prompt = engine.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is T1059?"}])
    assert prompt.startswith("<bos><start_of_turn>user\nBe brief.")
    assert prompt.endswith("<start_of_turn>model\n")
    answer = engine.chat([[{"role": "user", "content": "Name one ATT&CK tactic."}]], SamplingParams(max_new_tokens=8))
    assert len(answer) == 1 and isinstance(answer[0], str)


def test_special_tokens_reach_the_defusing_of_untrusted_text(engine):
    from secfm.workflows.untrusted import KNOWN_CONTROL_STRINGS, control_strings

    specials = engine.special_tokens()
    assert "<start_of_turn>" in specials and "<end_of_turn>" in specials and all(len(t) > 1 for t in specials)
    controls = control_strings(engine)
    assert set(specials) | set(KNOWN_CONTROL_STRINGS) == set(controls)
    assert [len(c) for c in controls] == sorted((len(c) for c in controls), reverse=True)  # longest first


def test_sampling_params_reject_nonsense():
    with pytest.raises(ValueError):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)


def test_unknown_engine_and_openai_without_endpoint():
    with pytest.raises(SecfmError, match="unknown engine"):
        get_engine("tensorrt")
    with pytest.raises(SecfmError, match="--endpoint"):
        get_engine("openai")


def test_openai_engine_unreachable_is_one_clear_error():
    with pytest.raises(SecfmError, match="cannot reach"):
        get_engine("openai", endpoint="http://127.0.0.1:9", model="gemma-3-270m", max_retries=0, timeout=2).generate(["hi"])


def test_closing_a_stream_stops_decoding_and_frees_the_engine(engine):
    import time

    params = SamplingParams(max_new_tokens=2000)
    pieces = engine.stream("Write a long incident report about ransomware:", params)
    next(pieces)
    started = time.perf_counter()
    pieces.close()  # what the app's Stop button does
    closed_after = time.perf_counter() - started
    # without cancellation close() would wait for all 2,000 tokens (minutes on this CPU)
    assert closed_after < 60
    assert engine._lock.acquire(timeout=5)
    engine._lock.release()
