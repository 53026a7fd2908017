"""A pure-Python stand-in for pycocoevalcap's tokenisation step (PTBTokenizer, which needs Java).

pycocoevalcap runs Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` on every
caption, then drops the tokens in ``PUNCTUATIONS``. This module reproduces that on the captions
people write: lower case; ``'s 're 've 'll 'd 'm n't`` split off (``don't`` -> ``do n't``,
``can't`` -> ``ca n't``); ``cannot gonna wanna gotta`` split; commas, full stops, colons,
semicolons, quotes and dashes split off and dropped; ``$ % # & + =`` and a lone ``/`` as tokens.

The Java tokenizer lower-cases AFTER it has escaped brackets, so ``(`` comes out as ``-lrb-``,
and pycocoevalcap's list holds the upper-case ``-LRB-``: the bracket tokens ``-lrb- -rrb- -lsb-
-rsb- -lcb- -rcb-`` SURVIVE in the real pipeline, and they survive here too. So do ``!!`` and ``!?``
(one token each, not in the list).

Where it can still differ from the Java tokenizer (rare in captions):
- abbreviations: only the listed ones (``mr. st. vs. etc. ft.``...), dotted letters (``u.s.``,
  ``p.m.``) and a single letter before a space (``f.``) keep their full stop; PTB's longer list
  and its context rules (``no.`` only before a number) are not copied;
- ``y'all`` / ``rock'n'roll`` stay one token here (PTB splits them oddly);
- SGML entities, URLs, e-mail addresses with a trailing full stop, emoticons and Unicode
  punctuation (curly quotes, ellipsis character) follow the generic rules;
- a full stop at the end of a dotted number (``3.5.``) is split off, as PTB does, but a dotted
  word (``a.b.c.``) keeps it.
"""

from __future__ import annotations

import re

__all__ = ["PTB_PUNCTUATION", "tokenize_caption"]

# pycocoevalcap's removal list, compared case-sensitively against the lower-cased tokens as
# pycocoevalcap does (hence the upper-case bracket names never match).
PTB_PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                             ".", "?", "!", ",", ":", "-", "--", "...", ";"])

_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "prof", "st", "mt", "jr", "sr", "vs", "etc", "ft", "no",
                  "inc", "co", "corp", "ltd", "bros", "ave", "blvd", "rd", "gen", "gov", "sen", "rep",
                  "capt", "col", "lt", "sgt", "jan", "feb", "mar", "apr", "aug", "sep", "sept", "oct",
                  "nov", "dec")
_WORD_CHAR = r"[^\s.,;:?!()\[\]{}\"'`%$#&+=*<>/\\|~^-]"
_WORD = rf"{_WORD_CHAR}+(?:[-./']{_WORD_CHAR}+)*"
_TOKEN = re.compile("|".join([
    r"<[a-z/][^<>\s]*>",                                  # an SGML tag stays whole
    r"-{2,}",                                             # dashes
    r"\.{2,}",                                            # an ellipsis
    r"[?!]+",                                             # "!" alone, but "!!" and "!?" are one token
    r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\w)",               # 2,000
    r"\d+(?:[.:/]\d+)+(?!\w)",                           # 3.5  5:30  1/2
    r"(?:[a-z]\.){2,}(?!\w)",                            # u.s.  p.m.  e.g.
    r"[a-z]\.(?=\s|$)",                                   # an initial: f.
    rf"(?:{'|'.join(_ABBREVIATIONS)})\.(?=\s|$|\d)",
    r"'(?:s|re|ve|ll|d|m)(?![\w'])",                      # a contraction written apart: "cat 's"
    _WORD,
    r"\S",                                                # any other character is a token of its own
]))
_CLITIC = re.compile(r"^(.+?)('s|'re|'ve|'ll|'d|'m|n't)$")
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "wanna": ["wan", "na"],
                "gotta": ["got", "ta"], "gimme": ["gim", "me"], "lemme": ["lem", "me"]}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-",
             '"': "''"}


def _split_word(word: str) -> list[str]:
    """``he'd've`` -> ``he 'd 've``; ``don't`` -> ``do n't``; a trailing ``'`` (``boys'``) apart."""
    if word in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[word])
    tail: list[str] = []
    while True:
        match = _CLITIC.match(word)
        if match is None or match.group(1) == "'":
            break
        word = match.group(1)
        tail.insert(0, match.group(2))
    if word.endswith("'") and len(word) > 1:
        return [word[:-1], "'"] + tail
    return [word] + tail


def tokenize_caption(text: str) -> str:
    """Tokenise one caption as pycocoevalcap's PTBTokenizer + punctuation removal would.

    Returns the kept tokens joined by single spaces (``""`` for a caption of punctuation only).
    """
    tokens: list[str] = []
    for raw in _TOKEN.findall(text.lower()):
        if raw in _BRACKETS:
            tokens.append(_BRACKETS[raw])
        elif raw.startswith("--"):
            tokens.append("--")
        elif raw.startswith(".."):
            tokens.append("...")
        else:
            tokens.extend(_split_word(raw))
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATION)
