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
    """A real `secfm serve --model gemma-3-270m` on a free loopback port, started as a new user
    would from outside the virtual environment: the venv's `secfm` script, no venv on PATH."""
    import os

    from secfm.serving import start_local_server, stop_server

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != venv_bin)
    proc, base_url, served = start_local_server("gemma-3-270m", log_path=log, argv0=[str(venv_bin / "secfm")], env=env)
    yield base_url, served, proc
    stop_server(proc)


SCHEMA = {"type": "object", "properties": {"technique": {"type": "string", "enum": ["T1003", "T1059", "T1566"]},
                                           "severity": {"type": "string", "enum": ["low", "medium", "high"]}},
          "required": ["technique", "severity"], "additionalProperties": False}


def test_openai_client_completion_and_chat(server):
    import openai

    base_url, served, _ = server
    client = openai.OpenAI(base_url=base_url, api_key="EMPTY")
    completion = client.completions.create(model=served, prompt="CVE-2021-44228 is", max_tokens=8, temperature=0)
    assert completion.choices[0].text.strip() and completion.usage.completion_tokens > 0
    chat = client.chat.completions.create(model=served, messages=[{"role": "user", "content": "Define phishing."}], max_tokens=8)
    assert chat.choices[0].message.content
    streamed = client.chat.completions.create(model=served, messages=[{"role": "user", "content": "Define phishing."}],
                                              max_tokens=8, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content for c in streamed if c.choices and c.choices[0].delta.content]
    greedy = client.chat.completions.create(model=served, messages=[{"role": "user", "content": "Define phishing."}],
                                            max_tokens=8, temperature=0)
    assert len(pieces) > 1 and "".join(pieces) == greedy.choices[0].message.content
    text_stream = client.completions.create(model=served, prompt="CVE-2021-44228 is", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in text_stream) == completion.choices[0].text
    # list prompts and n
    many = client.completions.create(model=served, prompt=["Ransomware", "Phishing"], n=2, max_tokens=4, temperature=0)
    assert len(many.choices) == 4 and many.choices[0].text == many.choices[1].text
    assert client.models.retrieve(served).id == served


def test_json_mode_is_honoured_with_constrained_decoding(server):
    import json

    import jsonschema
    import openai

    base_url, served, _ = server
    client = openai.OpenAI(base_url=base_url, api_key="EMPTY")
    resp = client.chat.completions.create(
        model=served, max_tokens=40, messages=[{"role": "user", "content": "Which ATT&CK technique is credential dumping?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}})
    jsonschema.validate(json.loads(resp.choices[0].message.content), SCHEMA)
    with pytest.raises(openai.BadRequestError, match="frequency_penalty"):
        client.chat.completions.create(model=served, messages=[{"role": "user", "content": "hi"}], frequency_penalty=1.0)
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(model=served, messages=[{"role": "user", "content": "hi"}],
                                       response_format={"type": "grammar"})
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("not-served")


def test_langchain_with_structured_output(server):
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    class Answer(BaseModel):
        technique: str = Field(json_schema_extra={"enum": ["T1003", "T1059", "T1566"]})
        severity: str = Field(json_schema_extra={"enum": ["low", "medium", "high"]})

    base_url, served, _ = server
    llm = ChatOpenAI(base_url=base_url, api_key="EMPTY", model=served, max_tokens=40, temperature=0)
    for method in ("json_schema", "function_calling"):
        answer = llm.with_structured_output(Answer, method=method).invoke("Which ATT&CK technique is credential dumping?")
        assert isinstance(answer, Answer) and answer.technique.startswith("T")


def test_prompt_logprobs_over_http_match_the_local_engine(server, engine):
    base_url, served, _ = server
    remote = get_engine("openai", endpoint=base_url, model=served)
    context = "Question: Which tactic does T1059 belong to?\nAnswer:"
    conts = [" Execution", " Persistence"]
    local = engine.loglikelihood(context, conts)
    over_http = remote.loglikelihood(context, conts)
    assert [r.logprob for r in over_http] == pytest.approx([r.logprob for r in local], abs=1e-3)


def test_openai_engine_matches_the_local_engine(server, engine):
    base_url, served, _ = server
    remote = get_engine("openai", endpoint=base_url, model=served)
    params = SamplingParams(max_new_tokens=8)
    prompt = "The attacker used PowerShell to"
    assert remote.generate([prompt], params) == engine.generate([prompt], params)
    pieces = list(remote.stream(prompt, params))
    assert "".join(pieces).strip()
    chat_pieces = list(remote.stream_chat([{"role": "user", "content": "Name one ATT&CK tactic."}], params))
    assert "".join(chat_pieces).strip()


def test_generate_cli_against_the_endpoint(server):
    base_url, served, _ = server
    proc = subprocess.run([sys.executable, "-m", "secfm.cli", "generate", "--endpoint", base_url, "--model", served, "-n", "6", "Ransomware"],
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().startswith("Ransomware") and len(proc.stdout.decode().strip()) > len("Ransomware")


def test_wrong_model_name_is_a_clear_error(server):
    base_url, _, _ = server
    with pytest.raises(SecfmError, match="answered 4"):
        get_engine("openai", endpoint=base_url, model="not-served", max_retries=0).generate(["hi"])


def test_plan_refuses_public_bind_without_key_and_estimates_memory(monkeypatch):
    monkeypatch.delenv("SECFM_API_KEY", raising=False)
    with pytest.raises(SecfmError, match="API key|SECFM_API_KEY"):
        plan_serve("gemma-3-270m", host="0.0.0.0", merge=False)
    plan = plan_serve("llama-3.1-8b", backend="vllm", tensor_parallel_size=2, max_model_len=8192,
                      host="0.0.0.0", api_key="secret", merge=False)
    assert plan.argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert plan.env["VLLM_API_KEY"] == "secret" and "secret" not in plan.argv and "secret" not in plan.shell_command()
    cpu = plan_serve("gemma-3-270m", backend="transformers", host="0.0.0.0", api_key="k", merge=False)
    assert cpu.argv[:3] == [sys.executable, "-m", "secfm.serving_api"] and cpu.env["SECFM_API_KEY"] == "k"
    with pytest.raises(SecfmError, match="API key|SECFM_API_KEY"):
        plan_serve("gemma-3-270m", host="", merge=False)  # "" binds every interface
    assert plan.memory.weights_gib == pytest.approx(8030261248 * 2 / 2 / 1024**3)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("10.0.0.1") and not is_loopback("")


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

    base_url, served, _ = server
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

    base_url, served, _ = server
    out = tmp_path / "bench-serve.json"
    result = run_serve_bench(model=served, endpoint=base_url, levels=[1, 3], max_tokens=3, out=out, min_requests=2,
                             allow_busy=True)
    assert json.loads(out.read_text()) == result and result["server"] == "external"
    one, three = result["levels"]
    assert (one["concurrency"], one["requests"]) == (1, 2) and (three["concurrency"], three["requests"]) == (3, 3)
    assert all(0 < r["latency_p50_s"] <= r["latency_p95_s"] and r["completion_tokens"] > 0 and r["tokens_per_s"] > 0
               and 0 < r["ttft_p50_s"] <= r["latency_p95_s"] for r in result["levels"])
    assert result["provenance"]["command"]


def test_lora_rank_limit_is_the_adapters_own(tmp_path):
    import json

    from secfm.engines.vllm_engine import lora_rank_limit

    for r, limit in ((8, 8), (24, 32), (64, 64)):
        (tmp_path / f"a{r}").mkdir()
        (tmp_path / f"a{r}" / "adapter_config.json").write_text(json.dumps({"r": r}))
        assert lora_rank_limit([tmp_path / f"a{r}"]) == limit
    assert lora_rank_limit([tmp_path / "a8"]) == 8
    assert lora_rank_limit([tmp_path / "a8", tmp_path / "a24"]) == 32
    assert lora_rank_limit([tmp_path / "a64"]) == 64


def test_sigterm_is_forwarded_and_nothing_keeps_listening(server):
    """Last in the module: stops the shared server the way an operator or systemd would."""
    import os
    import signal
    import socket
    import time

    base_url, _, proc = server
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert children, "secfm serve runs its server as a child"
    os.kill(proc.pid, signal.SIGTERM)  # the parent only: it must pass the signal on
    assert proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{c}").exists() and "zombie" not in Path(f"/proc/{c}/status").read_text() for c in children)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
