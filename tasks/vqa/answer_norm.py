"""Answer normalisation of the official VQA v2 evaluator, reimplemented.

Source of the rules: ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` in
GT-Vision-Lab/VQA (commit a013f0043c1e2cdc995922dfe257f7149aa9af06), methods
``processPunctuation`` and ``processDigitArticle``; ``prep_answer`` follows
``core/data/ans_punct.py::prep_ans`` in MILVLG/mcan-vqa (commit 6b165e9a88),
which applies the same two steps to every answer and then drops commas.

The official code is Python 2. We reproduce what a Python-3 run of it does,
because that is what every current pipeline executes; the only visible
consequence is that ``\\d`` in the two regexes matches any Unicode decimal digit
(Python 2 matched ASCII 0-9 only). Quirks kept on purpose, so scores agree:

* Whether a punctuation mark is deleted or turned into a space is decided from
  the *original* string, and a ``digit,digit`` anywhere deletes all of them.
* The official period regex ``(?!<=\\d)(\\.)(?!\\d)`` starts with a look-ahead
  (not a look-behind) that can never fail at a ``.``, so it is just
  "a period not followed by a digit".
* ``re.UNICODE`` (== 32) is passed as the ``count`` of that substitution, so at
  most 32 periods are deleted.
* Text is lower-cased before the contraction lookup, so table keys with
  capitals (``Im``, ``Ive``, ``Id've``, ``I'dve``) never match; the entry
  ``"somebody'd" -> "somebodyd"`` really removes an apostrophe.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "MAX_PERIOD_DELETIONS",
    "NUMBER_WORDS",
    "PUNCTUATION",
    "normalize_answer",
    "prep_answer",
    "process_digit_article",
    "process_punctuation",
]

# Order as in the official list; the result does not depend on it because each
# mark is replaced independently. Apostrophe, colon and period are not here.
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# All 120 entries of the official table, unchanged (including the unreachable
# capitalised keys and the odd "somebody'd" entry; see the module docstring).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's",
    "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}

# The official code passes re.UNICODE (whose value is 32) where `count` goes.
MAX_PERIOD_DELETIONS = 32

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


def process_punctuation(text: str) -> str:
    """Delete or space out punctuation, then drop periods not followed by a digit."""
    # Decided once from the original text, not from the partly processed one.
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        next_to_space = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if delete_all or next_to_space else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=MAX_PERIOD_DELETIONS)


def process_digit_article(text: str) -> str:
    """Lower-case, map number words to digits, drop articles, restore contractions."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    # Articles are dropped after the number mapping and before the contraction
    # lookup, as in the official loop order.
    kept = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in kept)


@functools.lru_cache(maxsize=1 << 18)
def normalize_answer(text: str) -> str:
    """Both official steps, as the evaluator applies them to split-GT questions.

    Cached because real annotation files repeat the same few thousand answers.
    """
    return process_digit_article(process_punctuation(text))


def prep_answer(text: str) -> str:
    """MCAN's answer-vocabulary key: the evaluator's normalisation minus commas.

    Unlike the evaluator there is no unanimity condition and no newline/tab
    clean-up; it is applied to every answer as is.
    """
    # The comma removal never changes anything (process_punctuation already
    # removed every comma); kept so the definition reads like MCAN's.
    return normalize_answer(text).replace(",", "")
