"""Loop-free decoding: repetition penalty and no-repeat n-grams in SamplingParams, the stop on
the next turn marker; the n-gram rule itself and parameter checks without a model."""

from __future__ import annotations

import pytest

from secfm.engines import LOOP_FREE, SamplingParams
from secfm.engines.base import banned_ngram_tokens, repeated_ngram

LOOPING_PROMPT = "security analyst. security analyst. security analyst. security analyst. security analyst."


def test_banned_ngram_tokens_over_the_generated_tokens():
    assert banned_ngram_tokens([1, 2, 3, 1, 2], 3) == {3}  # "1 2" was followed by 3: 3 would repeat "1 2 3"
    assert banned_ngram_tokens([1, 2, 3, 1, 2], 2) == {3}  # the last token 2 was followed by 3
    assert banned_ngram_tokens([5, 6, 7], 1) == {5, 6, 7}
    assert banned_ngram_tokens([1, 2], 3) == set() and banned_ngram_tokens([1, 2, 1], 0) == set()
    assert repeated_ngram([1, 2, 3, 1, 2, 3], 3) == (1, 2, 3) and repeated_ngram([1, 2, 3, 4], 2) is None


def test_sampling_params_repetition_fields_are_checked():
    with pytest.raises(ValueError, match="repetition_penalty"):
        SamplingParams(repetition_penalty=0)
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        SamplingParams(no_repeat_ngram_size=-1)
    free = SamplingParams.loop_free(max_new_tokens=9)
    assert free.max_new_tokens == 9 and free.no_repeat_ngram_size == LOOP_FREE["no_repeat_ngram_size"]
    assert free.controls_repetition and not SamplingParams().controls_repetition
    assert SamplingParams(stop=("a",)).with_stop(["b", "a"]).stop == ("a", "b")


def _ids(engine, text: str) -> list[int]:
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_greedy_loops_and_loop_free_decoding_does_not(engine):
    plain = engine.generate([LOOPING_PROMPT], SamplingParams(max_new_tokens=40))[0]
    assert repeated_ngram(_ids(engine, plain), 4) is not None  # the failure the chat saw: a loop
    params = SamplingParams(max_new_tokens=40, no_repeat_ngram_size=3)
    blocked = engine.generate([LOOPING_PROMPT], params)[0]
    assert repeated_ngram(_ids(engine, blocked), 3) is None, blocked
    assert "".join(engine.stream(LOOPING_PROMPT, params)) == blocked
    # a repetition penalty changes greedy output away from the loop as well
    penalised = engine.generate([LOOPING_PROMPT], SamplingParams(max_new_tokens=40, repetition_penalty=1.5))[0]
    assert penalised != plain


@pytest.mark.slow
def test_chat_stops_at_the_next_turn_marker(engine):
    assert set(engine.turn_markers()) == {"<start_of_turn>", "<end_of_turn>"}
    # after a finished assistant turn the base model starts the next turn itself ("...user\nSay hello!")
    prompt = engine.apply_chat_template([{"role": "user", "content": "Say hello."}]) + "Hello!<end_of_turn>\n"
    free = engine.generate([prompt], SamplingParams(max_new_tokens=12))[0]
    assert "user\n" in free
    stopped = engine.generate([prompt], engine.chat_params(SamplingParams(max_new_tokens=12)))[0]
    assert stopped == free[: free.index("user\n")]
    answer = engine.chat([[{"role": "user", "content": "What is T1059?"}]], SamplingParams(max_new_tokens=48))[0]
    assert "user\n" not in answer and "<start_of_turn>" not in answer
