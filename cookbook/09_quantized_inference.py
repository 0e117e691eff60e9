"""Recipe 9 — quantized inference on a CPU: dynamic int8 and GGUF Q4_K_M against fp32 and bf16.

Why and when: before shipping a model to laptops or small VMs, measure what quantization buys
(load time, memory, tokens/s) and what it costs (accuracy on a fixed question set) on your own
hardware, in one run. The published table is evals/results/bench-quant.md, made by
`secfm bench quant`; the GGUF variant needs `pip install 'secfm[quant]'` (llama.cpp).

    python cookbook/09_quantized_inference.py [--items 200] [--out evals/results/bench-quant.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from secfm.evals.bench_quant import VARIANTS, markdown_table, run_quant_bench


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200, help="questions per variant (200: the published study)")
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                        help="default: all; bf16 is skipped on a CPU without bfloat16 instructions unless named")
    parser.add_argument("--out", type=Path, default=Path("evals/results/bench-quant.json"))
    parser.add_argument("--allow-busy", action="store_true", help="measure on a machine busier than its cores (recorded)")
    args = parser.parse_args(argv)
    result = run_quant_bench(variants=args.variants, items=args.items, decode_tokens=args.decode_tokens, out=args.out,
                             allow_busy=args.allow_busy)
    print(markdown_table(result))
    return result


if __name__ == "__main__":
    main()
