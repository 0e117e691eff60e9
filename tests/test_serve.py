"""`secfm serve` on the CPU (transformers serve) driven with the openai client and the openai engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from secfm.engines import SamplingParams, get_engine
from secfm.errors import SecfmError
from secfm.serving import estimate_serving_memory, is_loopback, plan_serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    """A real `secfm serve --model gemma-3-270m` on a free loopback port."""
    from secfm.serving import start_local_server, stop_server

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc, base_url, served = start_local_server("gemma-3-270m", log_path=log)
    yield base_url, served
    stop_server(proc)


def test_openai_client_completion_and_chat(server):
    import openai

    base_url, served = server
    client = openai.OpenAI(base_url=base_url, api_key="EMPTY")
    completion = client.completions.create(model=served, prompt="CVE-2021-44228 is", max_tokens=8, temperature=0)
    assert completion.choices[0].text.strip()
    chat = client.chat.completions.create(model=served, messages=[{"role": "user", "content": "Define phishing."}], max_tokens=8)
    assert chat.choices[0].message.content


def test_openai_engine_matches_the_local_engine(server, engine):
    base_url, served = server
    remote = get_engine("openai", endpoint=base_url, model=served)
    params = SamplingParams(max_new_tokens=8)
    prompt = "The attacker used PowerShell to"
    assert remote.generate([prompt], params) == engine.generate([prompt], params)
    pieces = list(remote.stream(prompt, params))
    assert "".join(pieces).strip()
    chat_pieces = list(remote.stream_chat([{"role": "user", "content": "Name one ATT&CK tactic."}], params))
    assert "".join(chat_pieces).strip()


def test_generate_cli_against_the_endpoint(server):
    base_url, served = server
    proc = subprocess.run([sys.executable, "-m", "secfm.cli", "generate", "--endpoint", base_url, "--model", served, "-n", "6", "Ransomware"],
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().startswith("Ransomware") and len(proc.stdout.decode().strip()) > len("Ransomware")


def test_wrong_model_name_is_a_clear_error(server):
    base_url, _ = server
    with pytest.raises(SecfmError, match="answered 4"):
        get_engine("openai", endpoint=base_url, model="not-served", max_retries=0).generate(["hi"])


def test_plan_refuses_public_bind_without_key_and_estimates_memory(monkeypatch):
    monkeypatch.delenv("SECFM_API_KEY", raising=False)
    with pytest.raises(SecfmError, match="API key|SECFM_API_KEY"):
        plan_serve("gemma-3-270m", host="0.0.0.0", merge=False)
    plan = plan_serve("llama-3.1-8b", backend="vllm", tensor_parallel_size=2, max_model_len=8192,
                      host="0.0.0.0", api_key="secret", merge=False)
    assert plan.argv[:2] == ["vllm", "serve"] and "--api-key" in plan.argv
    assert "secret" not in plan.shell_command()
    assert plan.memory.weights_gib == pytest.approx(8030261248 * 2 / 2 / 1024**3)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("10.0.0.1")


def test_memory_estimate_arithmetic():
    from secfm.registry import get_spec

    arch = get_spec("llama-3.1-8b").arch
    one = estimate_serving_memory(arch, max_model_len=8192, tensor_parallel_size=1)
    # 32 layers x 8 KV heads x 128 dims x 2 (K,V) x 2 bytes = 128 KiB per token
    assert one.kv_bytes_per_token == 128 * 1024
    assert one.kv_cache_gib == pytest.approx(1.0)
    two = estimate_serving_memory(arch, max_model_len=8192, tensor_parallel_size=2)
    assert two.weights_gib == pytest.approx(one.weights_gib / 2) and two.kv_cache_gib == pytest.approx(0.5)


def test_eval_over_the_endpoint_matches_the_local_engine(server, tmp_path):
    """`secfm eval --engine openai` against `secfm serve` scores the same answers as in-process."""
    import json

    base_url, served = server
    data = str(Path(__file__).parent / "fixtures" / "ctibench" / "cti-mcq-attack.tsv")
    common = ["-m", "secfm.cli", "eval", "cti-mcqa", "--data", data, "--mode", "gen", "--limit", "3",
              "--max-new-tokens", "6", "--bootstrap", "10"]
    runs = {}
    for name, extra in {"remote": ["--engine", "openai", "--endpoint", base_url, "--model", served],
                        "local": ["--model", "gemma-3-270m"]}.items():
        out = tmp_path / name
        proc = subprocess.run([sys.executable, *common, *extra, "--out", str(out)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 3
        runs[name] = {r["id"]: r["raw"] for r in rows}
        assert json.loads((out / "run.json").read_text())["settings"]["engine"] == ("openai" if name == "remote" else "transformers")
    assert runs["remote"] == runs["local"]


def test_bench_serve_measures_each_concurrency_level(server, tmp_path):
    import json

    from secfm.app.bench_serve import run_serve_bench

    base_url, served = server
    out = tmp_path / "bench-serve.json"
    result = run_serve_bench(model=served, endpoint=base_url, levels=[1, 3], max_tokens=3, out=out, min_requests=2)
    assert json.loads(out.read_text()) == result and result["server"] == "external"
    one, three = result["levels"]
    assert (one["concurrency"], one["requests"]) == (1, 2) and (three["concurrency"], three["requests"]) == (3, 3)
    assert all(0 < r["latency_p50_s"] <= r["latency_p95_s"] and r["completion_tokens"] > 0 and r["tokens_per_s"] > 0
               for r in result["levels"])
