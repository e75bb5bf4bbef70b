"""Tiny task files in the Hub schemas of Dolly's seven lm-eval tasks (what `hf download` gives, as
JSON lines), made up on the spot so the evaluation tests and benchmark need no download.

Field types follow the Hub datasets: hellaswag's label and winogrande's answer are strings, piqa's
and boolq's labels integers, arc/openbookqa answer keys letters (arc also uses "1".."4" keys).
"""
import json
import random
from pathlib import Path

WORDS = ("water river stone bread light glass music paper garden cloud metal salt iron wood sand fire "
         "apple horse engine bridge window market forest ocean planet candle mirror ladder").split()


def _phrase(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _choices(rng, k, numeric=False):
    labels = [str(i + 1) for i in range(k)] if numeric else list("ABCDE"[:k])
    return {"text": [_phrase(rng, rng.randint(1, 4)) for _ in range(k)], "label": labels}


def make_docs(task: str, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(f"{task}-{seed}")
    docs = []
    for i in range(n):
        if task == "openbookqa":
            choices = _choices(rng, 4)
            docs.append({"id": f"{i}-obqa", "question_stem": f"The {_phrase(rng, 3)} is used to",
                         "choices": choices, "answerKey": rng.choice(choices["label"])})
        elif task in ("arc_easy", "arc_challenge"):
            choices = _choices(rng, rng.choice([3, 4, 5]), numeric=i % 5 == 4)
            docs.append({"id": f"Mercury_{i}", "question": f"Which {_phrase(rng, 2)} makes {_phrase(rng, 3)}?",
                         "choices": choices, "answerKey": rng.choice(choices["label"])})
        elif task == "winogrande":
            docs.append({"sentence": f"The {_phrase(rng, 2)} beat the {_phrase(rng, 1)} because _ was {_phrase(rng, 2)}.",
                         "option1": _phrase(rng, 1), "option2": _phrase(rng, 1), "answer": rng.choice(["1", "2"])})
        elif task == "hellaswag":
            docs.append({"ind": i, "activity_label": _phrase(rng, 2).title(), "ctx_a": f"A man {_phrase(rng, 4)}.",
                         "ctx_b": f"he [title] {_phrase(rng, 2)}", "ctx": "", "endings": [_phrase(rng, 4) for _ in range(4)],
                         "source_id": f"activitynet~v_{i}", "split": "val", "split_type": "indomain",
                         "label": str(rng.randrange(4))})
        elif task == "piqa":
            docs.append({"goal": f"How do you {_phrase(rng, 3)}?", "sol1": _phrase(rng, 5), "sol2": _phrase(rng, 5),
                         "label": rng.randrange(2)})
        elif task == "boolq":
            docs.append({"question": f"is the {_phrase(rng, 2)} made of {_phrase(rng, 1)}",
                         "passage": f"{_phrase(rng, 12)}. {_phrase(rng, 10)}.", "idx": i, "label": rng.randrange(2)})
        else:
            raise ValueError(task)
    return docs


def write_task_data(folder, tasks, n: int = 6, seed: int = 0) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        with (folder / f"{task}.jsonl").open("w", encoding="utf-8") as out:
            for doc in make_docs(task, n, seed):
                out.write(json.dumps(doc) + "\n")
    return folder
