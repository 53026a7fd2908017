"""Caption metrics: the PTB tokenizer stand-in, BLEU/ROUGE-L/CIDEr-D against pycocoevalcap and by
hand, CiderD's fixed document frequencies, and METEOR/SPICE reported as unavailable, never 0."""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
import shutil
import stat
from pathlib import Path

import pytest

from nas.errors import UserError
from tasks.caption.metrics import CiderD, bleu, cider_d, evaluate_captions, meteor, rouge_l, spice, tokenize_caption
from tasks.caption.metrics import external

JAVA = shutil.which("java") is not None

# COCO-style captions and what Stanford's PTBTokenizer 3.4.1 (-lowerCase -preserveLines) plus
# pycocoevalcap's punctuation removal made of them (run once with Java; kept so the test runs without it).
REALISTIC = {
    "A man riding a wave on top of a surfboard.": "a man riding a wave on top of a surfboard",
    "Two dogs, one brown and one white, play in the snow!": "two dogs one brown and one white play in the snow",
    "A woman's hand holding a cell phone (an old one).": "a woman 's hand holding a cell phone -lrb- an old one -rrb-",
    "There's a cat that isn't sleeping on the couch": "there 's a cat that is n't sleeping on the couch",
    'A sign that says "STOP" at the corner of 5th St. and Main.':
        "a sign that says stop at the corner of 5th st. and main",
    "A black-and-white photo of a 10-year-old boy; he can't smile.":
        "a black-and-white photo of a 10-year-old boy he ca n't smile",
    "Kids' toys are scattered on the floor...": "kids toys are scattered on the floor",
    "A plate with eggs, bacon & toast at 7:30 a.m.": "a plate with eggs bacon & toast at 7:30 a.m.",
    "People walking down a street in the U.S. -- it's raining.":
        "people walking down a street in the u.s. it 's raining",
    "A 3.5 ft. tall cake costs $20 (50% off)?": "a 3.5 ft. tall cake costs $ 20 -lrb- 50 % off -rrb-",
    "They're gonna eat pizza; we'll watch.": "they 're gon na eat pizza we 'll watch",
    "A kitchen w/ a stove: it's clean!!": "a kitchen w / a stove it 's clean !!",
}

V = "a the man woman dog cat on in with sitting standing red blue table street park of".split()


def random_captions(seed: int, images: int) -> tuple[dict[int, list[str]], dict[int, str]]:
    rng = random.Random(seed)

    def caption() -> str:
        return " ".join(rng.choice(V) for _ in range(rng.randint(1, 12)))
    refs = {i: [caption() for _ in range(rng.randint(1, 5))] for i in range(images)}
    return refs, {i: caption() for i in refs}


CASES = {
    "perfect": ({1: ["a man rides a horse on the beach", "a person on a horse"], 2: ["two dogs play in the snow"]},
                {1: "a man rides a horse on the beach", 2: "two dogs play in the snow"}),
    "no_overlap": ({1: ["a man rides a horse"], 2: ["two dogs play in snow", "dogs in snow"]},
                   {1: "green kitchen table", 2: "an airplane flying overhead today"}),
    "shorter": ({1: ["a man in a red shirt rides a brown horse on a sandy beach"], 2: ["a big dog runs on the grass"]},
                {1: "a man rides a horse", 2: "a dog runs"}),
    "longer": ({1: ["a man rides a horse"], 2: ["a dog runs"]},
               {1: "a man in a red shirt rides a brown horse on a sandy beach near the sea",
                2: "a big brown dog runs very fast on the green grass in the park"}),
    "repeated_ngrams": ({1: ["the cat sat on the mat", "there is a cat on the mat"], 2: ["a dog on a dog bed"]},
                        {1: "the the the the cat cat on on the mat", 2: "a dog a dog a dog a dog"}),
    "varying_refs": ({1: ["a man"], 2: ["a cat on a mat", "cat on mat", "the cat", "a small cat lies down",
                                        "a cat sits on a mat"], 3: ["people in a park", "a park with people"]},
                     {1: "a man standing", 2: "a cat on the mat", 3: "people walking in a park"}),
    "single_image": ({7: ["a red bus parked on the side of a street", "a bus at a stop"]},
                     {7: "a red bus at the side of the street"}),
    "random_30": random_captions(0, 30),
}


def pycocoevalcap_scores(refs: dict, hyps: dict) -> dict[str, object]:
    """pycocoevalcap's corpus and per-image scores for the same tokenised captions."""
    Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu").Bleu
    Rouge = pytest.importorskip("pycocoevalcap.rouge.rouge").Rouge
    Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider
    res = {k: [h] for k, h in hyps.items()}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its counts
        b, b_each = Bleu(4).compute_score(refs, res)
    r, r_each = Rouge().compute_score(refs, res)
    c, c_each = Cider().compute_score(refs, res)
    keys = list(refs)
    return {"bleu": list(b), "bleu_each": {k: [b_each[n][i] for n in range(4)] for i, k in enumerate(keys)},
            "rouge": float(r), "rouge_each": dict(zip(keys, map(float, r_each))),
            "cider": float(c), "cider_each": dict(zip(keys, map(float, c_each)))}


@pytest.mark.parametrize("name", list(CASES))
def test_bleu_rouge_cider_agree_with_pycocoevalcap(name: str) -> None:
    refs, hyps = CASES[name]
    expected = pycocoevalcap_scores(refs, hyps)
    b, b_each = bleu(refs, hyps)
    r, r_each = rouge_l(refs, hyps)
    c, c_each = cider_d(refs, hyps)
    assert b == pytest.approx(expected["bleu"], abs=1e-4)
    assert r == pytest.approx(expected["rouge"], abs=1e-4)
    assert c == pytest.approx(expected["cider"], abs=1e-4)
    for key in refs:
        assert b_each[key] == pytest.approx(expected["bleu_each"][key], abs=1e-4)
        assert r_each[key] == pytest.approx(expected["rouge_each"][key], abs=1e-4)
        assert c_each[key] == pytest.approx(expected["cider_each"][key], abs=1e-4)
    if name == "perfect":
        assert b == pytest.approx([1.0] * 4, abs=1e-6) and r == pytest.approx(1.0)
    if name == "no_overlap":
        assert max(b) < 1e-6 and r == 0.0 and c == 0.0


def test_hypotheses_in_one_element_lists_score_the_same() -> None:
    refs, hyps = CASES["varying_refs"]
    wrapped = {k: [h] for k, h in hyps.items()}
    assert bleu(refs, wrapped) == bleu(refs, hyps)
    assert rouge_l(refs, wrapped) == rouge_l(refs, hyps)
    assert cider_d(refs, wrapped) == cider_d(refs, hyps)
    with pytest.raises(ValueError, match="same keys"):
        bleu(refs, {1: "a man"})


def test_bleu_1_and_2_by_hand_with_brevity_penalty() -> None:
    refs = {0: ["the cat sat on the mat", "there is a cat on the mat"]}
    hyps = {0: "the cat the cat on"}
    # unigrams the x2, cat x2, on: clipped by the largest count in one reference (the 2, cat 1, on 1) -> 4/5
    # bigrams "the cat" x2, "cat the", "cat on": "the cat" clipped to 1 (ref 1), "cat on" 1 (ref 2) -> 2/4
    # reference lengths 6 and 7, hypothesis 5: the closest is 6, so BP = exp(1 - 6/5)
    bp = math.exp(1 - 6 / 5)
    scores, _ = bleu(refs, hyps)
    assert scores[0] == pytest.approx(4 / 5 * bp, abs=1e-8)
    assert scores[1] == pytest.approx(math.sqrt(4 / 5 * 2 / 4) * bp, abs=1e-8)


def test_rouge_l_by_hand_with_beta_1_2() -> None:
    refs = {0: ["the cat sat on the mat", "there is a cat on the mat"]}
    # LCS with ref 1 is 3 ("the cat on"), with ref 2 is 2 ("cat on"): P = max(3/5, 2/5), R = max(3/6, 2/7)
    p, r, beta = 3 / 5, 3 / 6, 1.2
    score, _ = rouge_l(refs, {0: "the cat the cat on"})
    assert score == pytest.approx((1 + beta ** 2) * p * r / (r + beta ** 2 * p), abs=1e-12)
    assert score == pytest.approx(0.536657, abs=1e-6)


def test_cider_d_fixed_corpus_differs_from_the_subsets_own_document_frequencies() -> None:
    refs, hyps = random_captions(1, 24)
    subset = {k: hyps[k] for k in list(hyps)[:6]}
    full_corpus = CiderD(refs)
    with_full_df, _ = full_corpus.score(subset)
    with_own_df, _ = CiderD({k: refs[k] for k in subset}).score(subset)
    # log(24) vs log(6) as the IDF ceiling, and other document frequencies: values differ (0.7196 vs 0.5977)
    assert abs(with_full_df - with_own_df) > 0.1
    assert with_full_df == pytest.approx(0.719635, abs=1e-4)
    assert with_own_df == pytest.approx(0.597672, abs=1e-4)
    # the subset's own corpus is pycocoevalcap on the subset; the full corpus is pycocoevalcap on the full set
    assert with_own_df == pytest.approx(pycocoevalcap_scores({k: refs[k] for k in subset}, subset)["cider"], abs=1e-4)
    full_mean, full_each = full_corpus.score(hyps)
    expected = pycocoevalcap_scores(refs, hyps)
    assert full_mean == pytest.approx(expected["cider"], abs=1e-4)
    assert full_each == pytest.approx(expected["cider_each"], abs=1e-4)
    # several samples of one image (self-critical training) score as one at a time
    pairs = [(3, hyps[3]), (3, hyps[5]), (5, hyps[5])]
    assert full_corpus.score_many(pairs) == [full_corpus.score_one(k, h) for k, h in pairs]
    assert full_corpus.score_one(5, hyps[5]) == full_each[5]
    with pytest.raises(ValueError, match="not in the CIDEr-D reference corpus"):
        full_corpus.score({99: "a cat"})


def test_tokenizer_on_realistic_captions() -> None:
    for caption, expected in REALISTIC.items():
        assert tokenize_caption(caption) == expected, caption
    assert tokenize_caption("... !") == ""


@pytest.mark.skipif(not JAVA, reason="java is not on PATH: cannot run Stanford's PTBTokenizer")
def test_tokenizer_agrees_with_the_java_ptb_tokenizer() -> None:
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    captions = list(REALISTIC)
    with contextlib.redirect_stderr(io.StringIO()):
        java = ptb.PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert [tokenize_caption(c) for c in captions] == [java[i][0] for i in range(len(captions))]


@pytest.mark.skipif(not JAVA, reason="java is not on PATH: cannot run Stanford's PTBTokenizer")
def test_evaluate_captions_equals_pycocoevalcaps_pipeline() -> None:
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    captions = list(REALISTIC)
    references = {i: captions[i:i + 3] + captions[:1] for i in range(0, 12, 2)}
    references[99] = ["an image without a result is not scored"]
    results = {i: captions[(i + 1) % 12] for i in range(0, 12, 2)}
    tokenizer = ptb.PTBTokenizer()
    with contextlib.redirect_stderr(io.StringIO()):
        gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in results})
        res = tokenizer.tokenize({i: [{"caption": c}] for i, c in results.items()})
    expected = pycocoevalcap_scores(gts, {i: r[0] for i, r in res.items()})
    scores = evaluate_captions(references, results, external=False)
    assert list(scores) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE"]
    assert [scores[f"Bleu_{n}"] for n in range(1, 5)] == pytest.approx(expected["bleu"], abs=1e-4)
    assert scores["ROUGE_L"] == pytest.approx(expected["rouge"], abs=1e-4)
    assert scores["CIDEr"] == pytest.approx(expected["cider"], abs=1e-4)
    assert scores["METEOR"] == scores["SPICE"] == "unavailable: not requested (external=False)"


def test_evaluate_captions_rejects_unknown_images() -> None:
    with pytest.raises(UserError, match=r"res\.json: image_id 5 has no reference captions"):
        evaluate_captions({1: ["a cat"]}, {1: "a cat", 5: "a dog"}, external=False, source="res.json")
    with pytest.raises(UserError, match="no captions"):
        evaluate_captions({1: ["a cat"]}, {}, external=False, source="res.json")


def test_external_metrics_unavailable_without_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    refs, hyps = {1: ["a man on a horse"]}, {1: "a man rides a horse"}
    assert meteor(refs, hyps) == "unavailable: java is not on PATH"
    assert spice(refs, hyps) == "unavailable: java is not on PATH"
    scores = evaluate_captions({1: ["A man on a horse."]}, {1: "A man rides a horse."})
    assert scores["METEOR"] == scores["SPICE"] == "unavailable: java is not on PATH"
    assert isinstance(scores["CIDEr"], float) and scores["Bleu_1"] > 0.5


def test_external_metrics_unavailable_without_pycocoevalcap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(external.importlib.util, "find_spec", lambda name: None)
    assert meteor({1: ["a cat"]}, {1: "a cat"}).startswith("unavailable: pycocoevalcap is not installed")


def fake_java_and_scorer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: str) -> None:
    """A ``java`` on PATH and a stand-in SPICE class, so the failure paths run without the JVM."""
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\nexit 0\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "fake_scorer.py").write_text(f"class Scorer:\n    def compute_score(self, gts, res):\n{body}\n")
    monkeypatch.setenv("PATH", f"{java.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(external._SCORERS, "SPICE", ("fake_scorer", "Scorer"))


def test_external_metric_failure_and_time_limit_are_unavailable(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    fake_java_and_scorer(monkeypatch, tmp_path, "        raise OSError('no Stanford models here')")
    assert spice({1: ["a cat"]}, {1: "a cat"}) == "unavailable: SPICE failed: OSError: no Stanford models here"
    (tmp_path / "fake_scorer.py").write_text(  # what pycocoevalcap's Spice() does offline
        "class Scorer:\n    def __init__(self):\n        print('Downloading stanford-corenlp-3.6.0 for SPICE ...')\n"
        "        raise OSError('Name or service not known')\n")
    assert spice({1: ["a cat"]}, {1: "a cat"}) == ("unavailable: SPICE could not download the Stanford CoreNLP "
                                                  "models it needs: OSError: Name or service not known")
    (tmp_path / "fake_scorer.py").write_text(
        "import time\nclass Scorer:\n    def compute_score(self, gts, res):\n        time.sleep(60)\n")
    assert spice({1: ["a cat"]}, {1: "a cat"}, timeout_s=1) == "unavailable: SPICE ran past its 1 s limit"
    (tmp_path / "fake_scorer.py").write_text(
        "class Scorer:\n    def compute_score(self, gts, res):\n        return float(len(gts['0'])), None\n")
    assert spice({1: ["a cat", "a kitten"]}, {1: "a cat"}) == 2.0


@pytest.mark.skipif(not JAVA, reason="java is not on PATH: METEOR cannot run")
def test_meteor_agrees_with_pycocoevalcap() -> None:
    pytest.importorskip("pycocoevalcap.meteor.meteor")
    refs = {1: ["a man riding a horse on a beach", "a person on a horse"], 2: ["two dogs playing in the grass"]}
    hyps = {1: "a man on a horse", 2: "a dog in the grass"}
    # pycocoevalcap 1.2's Meteor().compute_score on these captions (OpenJDK 17). Not recomputed here:
    # each JVM spends ~10 s loading METEOR's paraphrase table, and one is enough.
    assert meteor(refs, hyps) == pytest.approx(0.3763060643616588, abs=1e-6)
