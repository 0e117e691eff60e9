"""What the model sees: chat turns for gen mode, (context, continuations) requests for loglik mode."""

from __future__ import annotations

from secfm.engines import LoglikResult, Message
from secfm.errors import SecfmError
from secfm.evals.data import Item
from secfm.evals.specs import TaskSpec, render

LOGLIK_SCORINGS = ("letter", "sum", "per_token", "per_char")


def _fields(spec: TaskSpec, item: Item) -> dict[str, str]:
    return {**item.fields, "system": spec.system_prompt, "GT": item.gold or ""}


def gen_messages(spec: TaskSpec, item: Item, shots: list[Item] = ()) -> list[Message]:
    """System prompt, then each shot as a user turn and its gold answer, then the item's official prompt."""
    messages: list[Message] = [{"role": "system", "content": spec.system_prompt}]
    for shot in shots:
        messages.append({"role": "user", "content": shot.fields[spec.prompt_column]})
        messages.append({"role": "assistant", "content": render(spec.shot_answer, _fields(spec, shot))})
    messages.append({"role": "user", "content": item.fields[spec.prompt_column]})
    return messages


def loglik_request(spec: TaskSpec, item: Item, shots: list[Item] = ()) -> tuple[str, list[str]]:
    """One request per item: the context (question and listed options) and its continuations,
    the option texts first, then the letters."""
    L = spec.loglik
    if L is None:
        raise SecfmError(f"task {spec.name} has no loglik scoring")
    fields = _fields(spec, item)
    blocks = [render(L.preamble, fields)]
    for shot in shots:
        sf = _fields(spec, shot)
        gold = (shot.gold or "").strip().upper()
        if gold not in L.letters:
            raise SecfmError(f"shot row {shot.id} has gold {shot.gold!r}, not one of {', '.join(L.letters)}")
        answer = render(L.shot_answer, {"letter": gold, "choice": sf[L.choices[L.letters.index(gold)]]})
        blocks.append(render(L.question, sf) + answer + L.separator)
    blocks.append(render(L.question, fields))
    continuations = [render(L.choice, {"choice": fields[c]}) for c in L.choices]
    continuations += [render(L.letter, {"letter": letter}) for letter in L.letters]
    return "".join(blocks), continuations


def split_results(spec: TaskSpec, results: list[LoglikResult]) -> tuple[list[LoglikResult], list[LoglikResult]]:
    """(option results, letter results) of one item's request."""
    k = len(spec.loglik.choices)
    return results[:k], results[k:]


def _argmax(values: list[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def loglik_answers(spec: TaskSpec, cloze: list[LoglikResult], letters: list[LoglikResult]) -> dict[str, str]:
    """The chosen letter under each scoring: letter, and option text by sum, per token, per character."""
    names = spec.loglik.letters
    return {
        "letter": names[_argmax([r.logprob for r in letters])],
        "sum": names[_argmax([r.logprob for r in cloze])],
        "per_token": names[_argmax([r.per_token for r in cloze])],
        "per_char": names[_argmax([r.per_char for r in cloze])],
    }


def loglik_raw(spec: TaskSpec, cloze: list[LoglikResult], letters: list[LoglikResult]) -> dict:
    """Every option's log-likelihood (sum, per token, per character) and every letter's, for the record."""
    return {
        "options": [
            {
                "letter": letter,
                "logprob": round(r.logprob, 5),
                "n_tokens": r.n_tokens,
                "n_chars": r.n_chars,
                "per_token": round(r.per_token, 5),
                "per_char": round(r.per_char, 5),
                "is_greedy": r.is_greedy,
            }
            for letter, r in zip(spec.loglik.letters, cloze)
        ],
        "letters": {letter: round(r.logprob, 5) for letter, r in zip(spec.loglik.letters, letters)},
    }
