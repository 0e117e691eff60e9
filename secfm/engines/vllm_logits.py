"""vLLM's side of ``SamplingParams.no_repeat_ngram_size`` (imported only where vLLM is installed).

vLLM has the repetition penalty built in but no n-gram blocking; this per-request processor
(vLLM's ``AdapterLogitsProcessor`` wrapper) applies the same rule as every other engine
(:func:`secfm.engines.base.banned_ngram_tokens`, over the generated tokens only). The in-process
vllm engine passes it to ``vllm.LLM(logits_processors=[...])``; `secfm serve` on a GPU passes
``--logits-processors secfm.engines.vllm_logits:NoRepeatNgramLogitsProcessor`` and clients
send ``vllm_xargs: {"no_repeat_ngram_size": n}`` (the openai engine does).
"""

from __future__ import annotations

from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from secfm.engines.base import banned_ngram_tokens


class NoRepeatNgramLogitsProcessor(AdapterLogitsProcessor):
    """Reads ``no_repeat_ngram_size`` from a request's ``SamplingParams.extra_args``."""

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token is the most likely

    def new_req_logits_processor(self, params):
        n = int((getattr(params, "extra_args", None) or {}).get("no_repeat_ngram_size", 0) or 0)
        if n <= 0:
            return None

        def block(output_ids, logits):
            banned = banned_ngram_tokens(list(output_ids), n)
            if banned:
                logits[list(banned)] = float("-inf")
            return logits

        return block
