"""Recipe 1 — quickstart: generate and chat with a registered model, local or behind an endpoint.

Why and when: the first thing to try with a new model. The same three calls work on the local
transformers engine, on vLLM, and on any OpenAI-compatible server (`secfm serve`), so code written
against the laptop model runs unchanged against the 8B model on a GPU server.

    python cookbook/01_quickstart.py                       # local gemma-3-270m
    python cookbook/01_quickstart.py --endpoint http://127.0.0.1:8000/v1 --model gemma-3-270m
"""

from __future__ import annotations

import argparse

from secfm.engines import SamplingParams, get_engine


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--endpoint", default=None, help="OpenAI-compatible server; omit for in-process")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args(argv)

    engine = get_engine(model=args.model, endpoint=args.endpoint)  # an endpoint means the openai engine
    params = SamplingParams(max_new_tokens=args.max_new_tokens)

    # 1. plain completion, batched
    completions = engine.generate(["CVE-2021-44228 is", "Credential dumping means"], params)
    for c in completions:
        print("completion:", c.strip())

    # 2. chat: the registry supplies a chat template when the base model has none
    conversation = [
        {"role": "system", "content": "You are a concise SOC assistant."},
        {"role": "user", "content": "What should I check first after a phishing click?"},
    ]
    answer = engine.chat([conversation], params)[0]
    print("chat:", answer.strip())

    # 3. streaming, piece by piece, as the app does
    pieces = list(engine.stream_chat(conversation, params))
    print("streamed", len(pieces), "pieces:", "".join(pieces).strip())
    return {"completions": completions, "chat": answer, "pieces": pieces}


if __name__ == "__main__":
    main()
