"""Recipe 8 — serve a model (vLLM on a GPU, transformers serve on a CPU) and call it with the openai client.

Why and when: when several tools (the app, the workflows, evaluations, your own scripts) should
share one model process, or the model lives on a GPU box. `secfm serve` speaks the OpenAI
protocol on both paths, so the client code below is the same against a laptop and an A100.
On a GPU: `secfm serve --model secfm-8b --tensor-parallel-size 2 --api-key $KEY`.

    python cookbook/08_serve_and_call.py [--port 8011]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import httpx
import openai

from secfm.engines import SamplingParams, get_engine


def wait_for(url: str, model: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"secfm serve exited with status {proc.returncode}")
        try:
            if httpx.post(f"{url}/completions", json={"model": model, "prompt": "ok", "max_tokens": 1}, timeout=60).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"secfm serve did not answer within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--port", type=int, default=8011)
    args = parser.parse_args(argv)
    base_url = f"http://127.0.0.1:{args.port}/v1"

    # what would run, and how much GPU memory it needs, without starting anything
    subprocess.run(["secfm", "serve", "--model", args.model, "--port", str(args.port), "--dry-run"], check=True)
    server = subprocess.Popen(["secfm", "serve", "--model", args.model, "--port", str(args.port)], start_new_session=True)
    try:
        wait_for(base_url, args.model, server)
        client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("SECFM_API_KEY", "EMPTY"))
        completion = client.completions.create(model=args.model, prompt="Ransomware is", max_tokens=12, temperature=0)
        print("completion:", completion.choices[0].text.strip())
        stream = client.chat.completions.create(
            model=args.model, messages=[{"role": "user", "content": "One tip against phishing?"}], max_tokens=12, stream=True
        )
        pieces = [e.choices[0].delta.content for e in stream if e.choices and e.choices[0].delta.content]
        print("streamed chat:", "".join(pieces).strip())
        # the same server behind secfm's engine interface (what the app and workflows use)
        engine = get_engine("openai", endpoint=base_url, model=args.model)
        via_engine = engine.generate(["Ransomware is"], SamplingParams(max_new_tokens=12))[0]
        print("engine:", via_engine.strip())
        return {"completion": completion.choices[0].text, "pieces": pieces, "engine": via_engine}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
