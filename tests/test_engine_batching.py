"""Continuous batching in the transformers engine, on the real gemma-3-270m: requests that join a
running batch decode exactly as they do alone (greedy), cancellation frees a slot at once (queued
or decoding), queue positions, and every engine operation safe under 20 concurrent callers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from secfm.engines import SamplingParams

pytestmark = pytest.mark.slow

PROMPTS = ["CVE-2021-44228 is", "Phishing emails often", "The attacker used PowerShell to", "Ransomware encrypts",
           "Lateral movement with PsExec", "A SQL injection vulnerability allows"]


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_requests_joining_a_running_batch_equal_batch_of_one(engine):
    params = SamplingParams(max_new_tokens=14)
    alone = [engine.generate([p], params)[0] for p in PROMPTS]
    long = engine.submit("Write a long incident report about ransomware:", SamplingParams(max_new_tokens=60))
    next(iter(long))  # the long request decodes; the others join it mid-way, at different steps
    handles = []
    for p in PROMPTS:
        handles.append(engine.submit(p, params))
        time.sleep(0.15)
    joined = [h.result() for h in handles]
    long.cancel()
    assert joined == alone
    # a sampled request with a seed is reproducible whatever else is in the batch
    sampled = SamplingParams(max_new_tokens=12, temperature=0.9, seed=11)
    first = engine.generate([PROMPTS[0]], sampled)[0]
    crowd = engine.generate([PROMPTS[0], *PROMPTS[1:4]], sampled)
    assert crowd[0] == first


def test_cancelling_frees_the_slot_and_queued_requests_know_their_place(engine):
    scheduler = engine._scheduler  # the engine's own test may narrow its batch to see queueing
    slots = scheduler.max_batch
    scheduler.max_batch = 1
    try:
        running = engine.submit("Write a long incident report about ransomware:", SamplingParams(max_new_tokens=2000))
        assert next(iter(running))
        queued = [engine.submit(p, SamplingParams(max_new_tokens=4)) for p in PROMPTS[:3]]
        assert [q.position for q in queued] == [1, 2, 3] and running.position == 0
        queued[1].cancel()  # a queued request leaves the queue at once
        assert queued[2].position == 2 and list(queued[1]) == []
        stop = threading.Event()
        watched = running.watch(stop)
        stop.set()  # the app's Stop button
        assert list(watched) is not None
        assert _wait(lambda: running.finish_reason == "cancelled")
        assert queued[0].result() and queued[2].result()  # the freed slot served the queue
        assert _wait(lambda: engine.stats()["running"] == 0 and engine.stats()["waiting"] == 0)
    finally:
        scheduler.max_batch = slots


def test_closing_a_stream_frees_its_slot(engine):
    pieces = engine.stream("Write a long incident report about ransomware:", SamplingParams(max_new_tokens=2000))
    next(pieces)
    assert engine.stats()["running"] == 1
    pieces.close()  # what a closed HTTP stream or the Stop button does
    assert _wait(lambda: engine.stats()["running"] == 0, timeout=10)


def test_every_operation_is_safe_under_20_concurrent_callers(engine):
    texts = ["powershell -enc SQBFAFgA", "Failed password for root from 10.0.0.5", "mimikatz sekurlsa::logonpasswords"]
    reference_states = engine.hidden_states(texts, layers=[4, 9], pooling="mean")
    reference_text = engine.generate(["Lateral movement"], SamplingParams(max_new_tokens=6))[0]
    reference_ll = engine.loglikelihood("The sky is", [" blue"])[0].logprob
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

    def call(i: int):
        kind = i % 4
        if kind == 0:
            got = engine.hidden_states(texts, layers=[4, 9], pooling="mean")
            return all(np.allclose(got[k], reference_states[k], atol=1e-4) for k in (4, 9))
        if kind == 1:
            return "".join(engine.stream("Lateral movement", SamplingParams(max_new_tokens=6))) == reference_text
        if kind == 2:
            return abs(engine.loglikelihood("The sky is", [" blue"])[0].logprob - reference_ll) < 1e-3
        import json

        return isinstance(json.loads(engine.generate_json([[{"role": "user", "content": "Is T1003 real?"}]], schema,
                                                         SamplingParams(max_new_tokens=24))[0]).get("ok"), bool)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(call, range(20)))
    assert results == [True] * 20


def test_multi_layer_hidden_states_in_one_pass(engine):
    texts = ["Adversaries may abuse PowerShell.", "hello"]
    together = engine.hidden_states(texts, layers=[2, -1], pooling=["mean", "last"])
    assert set(together) == {(2, "mean"), (2, "last"), (-1, "mean"), (-1, "last")}
    for (layer, pooling), array in together.items():
        np.testing.assert_allclose(array, engine.hidden_states(texts, layer=layer, pooling=pooling), atol=1e-5)


def test_a_shared_prompt_prefix_is_reused_and_changes_nothing(engine):
    import torch

    system = "You are a security analyst. Answer in one short paragraph and cite ATT&CK technique ids."
    questions = ["What is credential dumping?", "How is PsExec used for lateral movement?", "What does T1059 cover?"]
    prompts = [engine.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": q}])
               for q in questions]
    params = SamplingParams(max_new_tokens=10)
    reference = []
    for p in prompts:  # plain transformers generate, no scheduler, no reuse
        batch = engine._encode([p])
        with torch.inference_mode():
            out = engine.model.generate(**batch, max_new_tokens=10, do_sample=False, pad_token_id=engine.tokenizer.pad_token_id,
                                        eos_token_id=engine._eos_ids)
        reference.append(engine.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True))
    engine.generate([prompts[0]], params)  # its prompt is kept; the system part is shared by the others
    assert engine._scheduler._prefixes
    assert engine.generate(prompts, params) == reference


def test_latency_bench_times_plain_generate_and_the_scheduler_alike(engine, tmp_path):
    """`secfm bench latency` without its servers: the same greedy text from plain generate and
    from the scheduler at batch 1, both timed, and the ratio between them."""
    import json

    from secfm.app.bench_latency import run_latency_bench

    out = tmp_path / "bench-latency.json"
    result = run_latency_bench("gemma-3-270m", out, max_tokens=4, repeats=1, servers=False, allow_busy=True)
    rows = result["rows"]
    assert set(rows) == {"plain_generate", "scheduler_batch_1"} and result["same_text"]
    assert rows["plain_generate"]["completion_tokens"] == rows["scheduler_batch_1"]["completion_tokens"] > 0
    assert result["scheduler_over_plain"] > 0 and json.loads(out.read_text())["provenance"]["command"]
