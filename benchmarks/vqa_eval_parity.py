"""Differential test: our VQA accuracy against the official evaluator.

The official ``vqaEval.py`` (GT-Vision-Lab/VQA) is Python 2. Either pass a
Python-3 copy of it that you made yourself (for example ``2to3 -w vqaEval.py``),
which is imported into this process::

    python benchmarks/vqa_eval_parity.py --official /tmp/vqa/vqaEval.py \\
        [--official-vqa /tmp/vqa/vqa.py] [--cases 20000] [--seed 0]

or pass the unmodified file together with a Python 2 interpreter, which then
runs it in a subprocess::

    python benchmarks/vqa_eval_parity.py --official VQA/.../vqaEval.py \\
        --python /usr/bin/python2.7 --ascii-only

Random questions with adversarial answers (punctuation next to spaces,
``1,000``, ``3.5``, ``U.S.A.``, number words, articles, contractions without
apostrophes, newlines/tabs, unanimous vs split GT, more than 32 periods,
duplicated answer dicts, odd answer counts, non-ASCII digits and letters) are
grouped into datasets of 1 to 1000 questions. Each dataset is scored by both
implementations; the script prints the largest absolute difference of overall,
per-answer-type, per-question-type and per-question accuracy, mismatches of the
two normalisation functions on every string, and table differences. With
``--official-vqa`` one dataset also goes through files, the official
``VQA``/``loadRes`` and our ``evaluate_vqa_files``. Exits 1 on any difference.

We follow a Python-3 run. Against the Python 2 run, ``--ascii-only`` leaves
out non-ASCII answers, where the two differ (``\\d`` and ``lower()`` are
Unicode-aware in Python 3); aggregates that sit exactly half-way at two
decimals are counted separately as rounding ties, because Python 2 ``round``
goes away from zero where Python 3 goes to even.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.vqa import answer_norm  # noqa: E402
from tasks.vqa.evaluation import (  # noqa: E402
    VqaScores,
    evaluate_vqa,
    evaluate_vqa_files,
    score_answer,
)

# --------------------------------------------------------------------------
# Random adversarial inputs
# --------------------------------------------------------------------------

BASE_ANSWERS = [
    "yes", "no", "Yes", "NO", "2", "two", "Two", "none", "zero", "0", "ten", "10", "one",
    "dog", "dogs", "Two dogs.", "2 dogs", "black and white", "black-and-white",
    "black & white", "1,000", "1000", "1.000", "3.5", "3 .5", "3. 5", ".5", "U.S.A.", "usa",
    "u.s.a", "dont", "don't", "whats", "what's", "Im", "im", "youre", "oclock",
    "somebody'd", "somebodyd", "yall'll", "the cat", "a cat", "an apple", "cat", "The Cat",
    "red, white, blue", "red,white", "10,000 feet", "left / right", "left/right", "(yes)",
    "yes!", "yes !", "?", "", " ", "...", "a", "the", "an", "mr. smith", "st. louis",
    "12:30", "e-mail", "e - mail", "x-ray", "snow_board", "tennis@court", "#1", "t.v.",
    "3 1/2", "1/2", "50%", "it's", "its", "1-,000 - 2", "2(,5 (", "3_,4", "7 ,8", "9, 10",
    # Non-ASCII: where Python 2 and Python 3 runs of the official code differ.
    "café", "naïve", "٣", "٣,٤", "３.５", "\u00a0yes", "yes\u2028", "İstanbul",
]
PUNCT_POOL = list(answer_norm.PUNCTUATION) + [".", "'", ":", "#", "%", "&", "*"]
WHITESPACE_POOL = [" ", "  ", "\n", "\t", " \n", "\t\t", "\r", "\xa0"]
ARTICLE_POOL = ["a", "an", "the", "A", "The", "AN"]
NUMBER_POOL = list(answer_norm.NUMBER_WORDS) + ["Three", "FIVE", "3", "1,5", "2.0", "11"]
CONTRACTION_POOL = list(answer_norm.CONTRACTIONS) + list(answer_norm.CONTRACTIONS.values())
QUESTION_TYPES = ["what color is the", "how many", "is the", "what is", "none of the above",
                  "why"]
ANSWER_TYPES = ["yes/no", "number", "other"]
DATASET_SIZES = [1, 2, 7, 40, 200, 1000]


class CaseGenerator:
    """Random annotation/result pairs that hit every normalisation rule."""

    def __init__(self, rng: random.Random, ascii_only: bool):
        self.rng = rng
        keep = (lambda text: text.isascii()) if ascii_only else (lambda text: True)
        self.base_answers = [text for text in BASE_ANSWERS if keep(text)]
        self.whitespace = [text for text in WHITESPACE_POOL if keep(text)]

    def _insert(self, text: str, piece: str) -> str:
        at = self.rng.randint(0, len(text))
        return text[:at] + piece + text[at:]

    def mutate(self, text: str) -> str:
        """Apply 0-3 random edits that each exercise one normalisation rule."""
        rng = self.rng
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            edit = rng.randrange(10)
            if edit == 0:
                text = self._insert(text, rng.choice(PUNCT_POOL))
            elif edit == 1:
                mark = rng.choice(PUNCT_POOL)
                text = self._insert(text, rng.choice([" " + mark, mark + " ", f" {mark} "]))
            elif edit == 2:
                text = rng.choice([str.upper, str.lower, str.title, str.capitalize])(text)
            elif edit == 3:
                text = rng.choice(ARTICLE_POOL) + " " + text
            elif edit == 4:
                text = rng.choice(self.whitespace) + text + rng.choice(self.whitespace)
            elif edit == 5:
                text = text + " " + rng.choice(NUMBER_POOL)
            elif edit == 6:
                text = rng.choice(CONTRACTION_POOL) + " " + text
            elif edit == 7:
                # More than 32 periods: the official substitution stops after 32.
                text = text + "." * rng.randint(30, 40) + rng.choice(["", "5", " x."])
            elif edit == 8:
                # digit,digit switches every mark to deletion; a mark between the
                # digit and the comma must not (the test is on the original text).
                glue = rng.choice(["", "", rng.choice(PUNCT_POOL)])
                text = text + f" {rng.randint(0, 99)}{glue},{rng.randint(0, 999):03d}"
            else:
                text = text.replace(" ", rng.choice(self.whitespace))
        return text

    def random_answer(self) -> str:
        return self.mutate(self.rng.choice(self.base_answers))

    def gt_answers(self) -> list[dict]:
        rng = self.rng
        count = 10 if rng.random() < 0.8 else rng.choice([1, 2, 3, 5, 9, 11, 15])
        if rng.random() < 0.25:  # unanimous, possibly differing only in outer whitespace
            base = self.random_answer()
            texts = [rng.choice(["", " ", "\n", "\t"]) + base + rng.choice(["", " ", "\t"])
                     for _ in range(count)]
        else:
            # Variants of one answer, so that normalisation decides the matches.
            base = rng.choice(self.base_answers)
            pool = [base] + [self.mutate(base) for _ in range(rng.randint(0, 3))]
            pool += [self.random_answer() for _ in range(rng.randint(0, 2))]
            texts = [rng.choice(pool) for _ in range(count)]
        answers = [{"answer": text, "answer_confidence": rng.choice(["yes", "maybe", "no"]),
                    "answer_id": k + 1} for k, text in enumerate(texts)]
        duplicates = rng.random()
        if duplicates < 0.1:  # whole-dict duplicates leave together in leave-one-out
            for entry in answers:
                entry["answer_id"], entry["answer_confidence"] = 1, "yes"
        elif duplicates < 0.2:
            answers.append(copy.deepcopy(rng.choice(answers)))
        return answers

    def prediction(self, gts: list[dict]) -> str:
        draw = self.rng.random()
        if draw < 0.3:
            return self.rng.choice(gts)["answer"]
        if draw < 0.8:
            return self.mutate(self.rng.choice(gts)["answer"])
        return self.random_answer()

    def dataset(self, size: int, first_id: int) -> dict[str, Any]:
        rng = self.rng
        annotations, results = [], []
        for qid in range(first_id, first_id + size):
            answers = self.gt_answers()
            annotations.append({
                "question_id": qid, "image_id": qid // 1000,
                "question_type": rng.choice(QUESTION_TYPES),
                "answer_type": rng.choice(ANSWER_TYPES),
                "multiple_choice_answer": answers[0]["answer"], "answers": answers,
            })
            results.append({"question_id": qid, "answer": self.prediction(answers)})
        rng.shuffle(results)
        subset = None
        if size > 1 and rng.random() < 0.2:  # explicit question_ids: a shuffled subset
            subset = rng.sample([ann["question_id"] for ann in annotations], rng.randint(1, size))
        return {"annotations": annotations, "results": results, "question_ids": subset}


def generate(seed: int, cases: int, ascii_only: bool) -> list[dict[str, Any]]:
    gen = CaseGenerator(random.Random(seed), ascii_only)
    datasets, total, next_id = [], 0, 1_000_000
    while total < cases:
        size = min(gen.rng.choice(DATASET_SIZES), cases - total)
        datasets.append(gen.dataset(size, next_id))
        total += size
        next_id += 10 * size
    return datasets


def all_strings(datasets: list[dict[str, Any]]) -> list[str]:
    found = {entry["answer"] for data in datasets for ann in data["annotations"]
             for entry in ann["answers"]}
    found.update(res["answer"] for data in datasets for res in data["results"])
    return sorted(found)


# --------------------------------------------------------------------------
# Running the official code
# --------------------------------------------------------------------------

# Runs under Python 2.7 or 3: argv = vqaEval.py's folder, job JSON, output JSON.
_DRIVER = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])
from vqaEval import VQAEval

class Split(object):
    def __init__(self, entries):
        self.qa = dict((e["question_id"], e) for e in entries)
        self.ids = [e["question_id"] for e in entries]
    def getQuesIds(self):
        return list(self.ids)

job = json.load(open(sys.argv[2]))
out = {"datasets": [], "norm": []}
fresh = VQAEval(Split([]), Split([]))
out["tables"] = {"contractions": fresh.contractions, "number_words": dict(fresh.manualMap),
                 "articles": fresh.articles, "punctuation": fresh.punct}
real_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
for data in job["datasets"]:
    ev = VQAEval(Split(data["annotations"]), Split(data["results"]), n=2)
    ev.evaluate(data["question_ids"])
    out["datasets"].append({
        "overall": ev.accuracy["overall"], "per_answer_type": ev.accuracy["perAnswerType"],
        "per_question_type": ev.accuracy["perQuestionType"],
        "per_question": dict((str(k), v) for k, v in ev.evalQA.items())})
for text in job["strings"]:
    out["norm"].append([fresh.processPunctuation(text), fresh.processDigitArticle(text)])
sys.stdout = real_stdout
json.dump(out, open(sys.argv[3], "w"))
'''


def run_official_subprocess(python: str, official: Path, datasets: list[dict],
                            strings: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        driver, job, out = (Path(tmp) / name for name in ("driver.py", "job.json", "out.json"))
        driver.write_text(_DRIVER)
        job.write_text(json.dumps({"datasets": datasets, "strings": strings}))
        subprocess.run([python, str(driver), str(official.resolve().parent), str(job), str(out)],
                       check=True)
        return json.loads(out.read_text())


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: cannot import it as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _OfficialSplit:
    """Just the attributes VQAEval reads from its ``vqa``/``vqaRes`` objects."""

    def __init__(self, entries: list[dict]):
        self.qa = {entry["question_id"]: entry for entry in entries}
        self._ids = [entry["question_id"] for entry in entries]

    def getQuesIds(self) -> list[int]:  # noqa: N802 (official name)
        return list(self._ids)


def _accuracy_dict(evaluator: Any) -> dict[str, Any]:
    return {"overall": evaluator.accuracy["overall"],
            "per_answer_type": evaluator.accuracy["perAnswerType"],
            "per_question_type": evaluator.accuracy["perQuestionType"],
            "per_question": {str(k): v for k, v in evaluator.evalQA.items()}}


def run_official_in_process(module: ModuleType, datasets: list[dict],
                            strings: list[str]) -> dict[str, Any]:
    fresh = module.VQAEval(_OfficialSplit([]), _OfficialSplit([]))
    out: dict[str, Any] = {"datasets": [], "tables": {
        "contractions": fresh.contractions, "number_words": dict(fresh.manualMap),
        "articles": fresh.articles, "punctuation": fresh.punct}}
    for data in datasets:
        # The official evaluate rewrites the GT answers in place: give it copies.
        evaluator = module.VQAEval(_OfficialSplit(copy.deepcopy(data["annotations"])),
                                   _OfficialSplit(copy.deepcopy(data["results"])), n=2)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate(data["question_ids"])
        out["datasets"].append(_accuracy_dict(evaluator))
    out["norm"] = [[fresh.processPunctuation(text), fresh.processDigitArticle(text)]
                   for text in strings]
    return out


def files_round_trip(vqa_module: ModuleType, eval_module: ModuleType,
                     data: dict[str, Any]) -> tuple[VqaScores, dict[str, Any]]:
    """Score one dataset from files with evaluate_vqa_files and official loadRes."""
    annotations = data["annotations"]
    questions = [{"question_id": a["question_id"], "image_id": a["image_id"], "question": "?"}
                 for a in annotations]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: Path(tmp) / f"{name}.json" for name in ("q", "a", "r")}
        paths["q"].write_text(json.dumps({
            "info": {}, "task_type": "Open-Ended", "data_type": "mscoco",
            "data_subtype": "val2014", "license": {}, "questions": questions}))
        paths["a"].write_text(json.dumps({
            "info": {}, "license": {}, "data_type": "mscoco", "data_subtype": "val2014",
            "annotations": annotations}))
        paths["r"].write_text(json.dumps(data["results"]))
        ours = evaluate_vqa_files(paths["q"], paths["a"], paths["r"])
        with contextlib.redirect_stdout(io.StringIO()):
            vqa = vqa_module.VQA(str(paths["a"]), str(paths["q"]))
            evaluator = eval_module.VQAEval(vqa, vqa.loadRes(str(paths["r"]), str(paths["q"])),
                                            n=2)
            evaluator.evaluate()
    return ours, _accuracy_dict(evaluator)


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------

def _group_means(data: dict[str, Any]) -> dict[tuple[str, Any], float]:
    """Unrounded 100 * mean per aggregate of one dataset, the official way."""
    by_id = {ann["question_id"]: ann for ann in data["annotations"]}
    predictions = {res["question_id"]: res["answer"] for res in data["results"]}
    groups: dict[tuple[str, Any], list[float]] = {}
    for qid in data["question_ids"] or list(by_id):
        ann = by_id[qid]
        acc = score_answer(predictions[qid], ann["answers"])
        for group in (("overall", 0), ("per_answer_type", ann["answer_type"]),
                      ("per_question_type", ann["question_type"]), ("per_question", str(qid))):
            groups.setdefault(group, []).append(acc)
    return {group: 100 * float(sum(vals)) / len(vals) for group, vals in groups.items()}


def is_python2_rounding_tie(unrounded: float, official: float) -> bool:
    """True where ``unrounded`` lies exactly half-way at 2 decimals and the
    official figure is it rounded half away from zero (Python 2 ``round``)."""
    thousandths = Fraction(unrounded) * 1000
    if thousandths.denominator != 1 or thousandths.numerator % 10 != 5:
        return False
    half_up = float(Decimal(unrounded).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    return official == half_up


@dataclass
class Tally:
    datasets: int = 0
    questions: int = 0
    max_diff: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("overall", "per_answer_type", "per_question_type", "per_question"), 0.0))
    rounding_ties: int = 0
    key_mismatches: int = 0
    strings: int = 0
    norm_mismatches: int = 0
    examples: list[str] = field(default_factory=list)
    table_problems: list[str] = field(default_factory=list)

    def add_scores(self, ours: VqaScores, theirs: dict[str, Any],
                   data: dict[str, Any] | None = None) -> None:
        self.datasets += 1
        self.questions += ours.num_questions
        cache: dict[str, dict] = {}

        def means() -> dict[tuple[str, Any], float]:
            # Recomputed only for datasets that show a difference.
            if "means" not in cache:
                cache["means"] = _group_means(data) if data is not None else {}
            return cache["means"]

        self._diff("overall", {0: ours.overall}, {0: theirs["overall"]}, means)
        self._diff("per_answer_type", ours.per_answer_type, theirs["per_answer_type"], means)
        self._diff("per_question_type", ours.per_question_type, theirs["per_question_type"],
                   means)
        self._diff("per_question", {str(k): v for k, v in ours.per_question.items()},
                   theirs["per_question"], means)

    def _diff(self, name: str, ours: dict, theirs: dict,
              means: Callable[[], dict[tuple[str, Any], float]]) -> None:
        if set(ours) != set(theirs):
            self.key_mismatches += 1
            return
        for key in ours:
            gap = abs(ours[key] - theirs[key])
            if gap == 0:
                continue
            unrounded = means().get((name, key))
            # Python 2 rounds exact binary ties away from zero, Python 3 to even.
            if unrounded is not None and is_python2_rounding_tie(unrounded, theirs[key]):
                self.rounding_ties += 1
                continue
            if len(self.examples) < 10:
                self.examples.append(f"{name}[{key!r}]: ours {ours[key]}, official {theirs[key]}")
            self.max_diff[name] = max(self.max_diff[name], gap)

    def add_normalisation(self, strings: list[str], theirs: list[list[str]]) -> None:
        for text, (punct, digit) in zip(strings, theirs):
            self.strings += 1
            ours = (answer_norm.process_punctuation(text), answer_norm.process_digit_article(text))
            if ours != (punct, digit):
                self.norm_mismatches += 1
                if len(self.examples) < 10:
                    self.examples.append(f"normalise({text!r}): ours {ours}, "
                                         f"official {(punct, digit)}")

    def add_tables(self, tables: dict[str, Any]) -> None:
        ours = {"contractions": answer_norm.CONTRACTIONS,
                "number_words": answer_norm.NUMBER_WORDS,
                "articles": sorted(answer_norm.ARTICLES),
                "punctuation": list(answer_norm.PUNCTUATION)}
        tables = dict(tables, articles=sorted(tables["articles"]))
        self.table_problems = [f"{name} differs" for name in ours if ours[name] != tables[name]]

    @property
    def clean(self) -> bool:
        return (self.key_mismatches == 0 and self.norm_mismatches == 0
                and not self.table_problems and all(v == 0 for v in self.max_diff.values()))

    def report(self) -> str:
        lines = [f"  max |ours - official| {name:<18} {value:.6g}"
                 for name, value in self.max_diff.items()]
        lines += [f"  exact rounding ties rounded up by the official run (Python 2 round): "
                  f"{self.rounding_ties}",
                  f"  key-set mismatches: {self.key_mismatches}",
                  f"  normalisation mismatches: {self.norm_mismatches} of {self.strings} strings",
                  f"  tables: {', '.join(self.table_problems) or 'identical'}"]
        lines += [f"    e.g. {example}" for example in self.examples]
        return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    datasets = generate(args.seed, args.cases, args.ascii_only)
    strings = all_strings(datasets)
    if args.python:
        official = run_official_subprocess(args.python, args.official, datasets, strings)
        eval_module = None
    else:
        eval_module = load_module(args.official, "official_vqa_eval")
        official = run_official_in_process(eval_module, datasets, strings)

    tally = Tally()
    tally.add_tables(official["tables"])
    for data, theirs in zip(datasets, official["datasets"]):
        tally.add_scores(evaluate_vqa(data["annotations"], data["results"],
                                      data["question_ids"]), theirs, data)
    tally.add_normalisation(strings, official["norm"])
    questions, scored = sum(len(d["annotations"]) for d in datasets), tally.questions

    if args.official_vqa and eval_module is not None:
        vqa_module = load_module(args.official_vqa, "official_vqa_tools")
        largest = max(datasets, key=lambda data: len(data["annotations"]))
        tally.add_scores(*files_round_trip(vqa_module, eval_module, largest))
        print(f"files round trip through official VQA.loadRes: "
              f"{len(largest['annotations'])} questions")

    print(f"seed {args.seed}: {questions} questions in {len(datasets)} datasets "
          f"({scored} scored; some datasets use a question_ids subset), "
          f"{len(strings)} distinct strings, {time.perf_counter() - started:.1f} s")
    print(tally.report())
    verdict = "PARITY OK" if tally.clean else "PARITY FAILED"
    if tally.clean and tally.rounding_ties:
        verdict += f" (apart from {tally.rounding_ties} exact rounding ties)"
    print(verdict)
    return 0 if tally.clean else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="PythonEvaluationTools/vqaEvaluation/vqaEval.py: a Python-3 copy, "
                             "or the original together with --python")
    parser.add_argument("--python", default=None,
                        help="run --official in a subprocess under this interpreter "
                             "(e.g. python2.7 for the unmodified file)")
    parser.add_argument("--official-vqa", type=Path, default=None,
                        help="Python-3 copy of PythonHelperTools/vqaTools/vqa.py: also compare "
                             "a files round trip through VQA.loadRes (in-process mode only)")
    parser.add_argument("--cases", type=int, default=20000, help="number of random questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ascii-only", action="store_true",
                        help="leave out non-ASCII answers (Python 2 and 3 differ on them)")
    args = parser.parse_args(argv)
    for path in (args.official, args.official_vqa):
        if path is not None and not path.is_file():
            parser.error(f"{path}: file not found")
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
