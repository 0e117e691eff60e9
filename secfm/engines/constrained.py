"""lm-format-enforcer glue for the transformers engine's ``generate_json``.

lm-format-enforcer's ``JsonSchemaParser`` + ``TokenEnforcer`` decide the allowed tokens at
every step; one enforcer per request, so each request may have its own schema. Its
``integrations.transformers`` module does not import under transformers 5 (it imports
``PreTrainedTokenizerBase`` from a module that moved; fixed upstream in
noamgat/lm-format-enforcer#175), so the few lines it holds (the regular-token table) live here,
on the library's public core classes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

_TOKENIZER_DATA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TOKENIZER_DATA_LOCK = threading.Lock()


def tokenizer_data(tokenizer, eos_ids: Sequence[int]):
    """lm-format-enforcer's per-tokenizer tables (built once per tokenizer, about 10 s for a
    262k vocabulary)."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    with _TOKENIZER_DATA_LOCK:
        data = _TOKENIZER_DATA.get(tokenizer)
        if data is not None:
            return data
        vocab_size = len(tokenizer)
        special = set(tokenizer.all_special_ids)
        zero = tokenizer.encode("0", add_special_tokens=False)[-1]
        regular = []
        for token_id in range(vocab_size):
            if token_id in special:
                continue
            # decode after "0" to see a word-start token's leading space (as lmfe does)
            after_zero = tokenizer.decode([zero, token_id])[1:]
            alone = tokenizer.decode([token_id])
            regular.append((token_id, after_zero, len(after_zero) > len(alone)))

        def decode(ids: list[int]) -> str:
            return tokenizer.decode(ids).rstrip("\ufffd")

        data = TokenEnforcerTokenizerData(regular, decode, list(eos_ids) or [tokenizer.eos_token_id], False, vocab_size)
        _TOKENIZER_DATA[tokenizer] = data
        return data


class JsonConstraint:
    """The allowed next tokens of one request under one JSON schema (compact JSON, fields in
    schema order)."""

    def __init__(self, data, schema: dict, prompt_ids: Sequence[int]):
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        parser = JsonSchemaParser(schema)
        self._enforcer = TokenEnforcer(data, parser)
        # TokenEnforcer gives the parser a fresh config; tune it in place
        parser.config.max_consecutive_whitespaces = 1
        parser.config.force_json_field_order = True
        self._prompt = list(prompt_ids)

    def allowed(self, generated: Sequence[int]) -> list[int]:
        return self._enforcer.get_allowed_tokens(self._prompt + list(generated)).allowed_tokens
