"""SentencePiece tokenizer for DeBERTa-V3 / mDeBERTa-V3, tokenizer training, and the `tokenizer` CLI.

The released models were trained on ids from SentencePiece's own segmentation (`spm.encode`, with the
model's `nmt_nfkc` charsmap and whitespace rules), which is what transformers' original slow
`DebertaV2Tokenizer` produced. transformers 5 replaced that class with a `tokenizers` Unigram
re-implementation that normalises with NFC, collapses whitespace itself and ignores the charsmap, so its ids
drift from the training ids on some text (full-width forms, compatibility characters, ...). This module
therefore always runs `spm.encode` on the text and uses spm ids directly.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import operator
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from mdeberta.errors import MissingFileError, UsageError

SPM_FILE = "spm.model"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
# Order matters: special tokens missing from the spm are appended in this order (normally only [MASK]).
SPECIAL_TOKEN_KEYS = tuple(f"{k}_token" for k in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"))
DEFAULT_SPECIAL_TOKENS = dict(
    zip(SPECIAL_TOKEN_KEYS, ("[CLS]", "[SEP]", "[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"))
)
# DeBERTa-V3's spm id layout; [MASK] is not in the spm, the tokenizer appends it.
DEBERTA_SPM_LAYOUT = dict(
    pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]"
)
DEBERTA_SPM_LAYOUT.update(unk_id=3, unk_piece="[UNK]")
# transformers writes this sentinel (int(1e30)) when a tokenizer has no length limit.
_NO_MAX_LENGTH = 10**9


def _is_punctuation(char: str) -> bool:
    """Same rule as BERT / the slow DebertaV2Tokenizer: ASCII non-alphanumerics and Unicode P* categories."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def split_on_punctuation(text: str) -> list[str]:
    """Port of the slow tokenizer's `_run_split_on_punc`: each punctuation char becomes its own chunk."""
    chunks: list[str] = []
    start_new = True
    for char in text:
        if _is_punctuation(char):
            chunks.append(char)
            start_new = True
        else:
            if start_new:
                chunks.append("")
            start_new = False
            chunks[-1] += char
    return chunks


class BatchEncoding(dict):
    """A dict of model inputs that also allows attribute access (`enc.input_ids`), like transformers'.

    ``word_ids(i)`` / ``sequence_ids(i)``: per token of row ``i``, the index of the word it belongs to (the word
    list's index with ``is_split_into_words``, else a count of SentencePiece word starts) and of its sequence
    (0 or 1); None for special and padding tokens.
    """

    def __init__(self, data: dict, word_ids: list | None = None, sequence_ids: list | None = None) -> None:
        super().__init__(data)
        self._word_ids, self._sequence_ids = word_ids, sequence_ids

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        if self._word_ids is None:
            raise UsageError("word_ids() is only available for encodings made by DebertaTokenizer.__call__")
        return self._word_ids[batch_index]

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        if self._sequence_ids is None:
            raise UsageError("sequence_ids() is only available for encodings made by DebertaTokenizer.__call__")
        return self._sequence_ids[batch_index]


def _token_content(value: Any) -> str:
    """tokenizer_config.json stores special tokens either as strings or as AddedToken dicts."""
    return value["content"] if isinstance(value, dict) else str(value)


class DebertaTokenizer:
    """DeBERTa-V3 tokenizer: spm ids for text, `[CLS] A [SEP] B [SEP]` layout, [MASK] appended after the pieces.

    Special token strings occurring inside the text are split out before spm sees it (the slow tokenizer
    did the same); whitespace next to them is stripped, which is the slow tokenizer's default for plain
    string special tokens and changes nothing for spm models that remove extra whitespace anyway.
    """

    def __init__(
        self,
        vocab_file: str | os.PathLike[str],
        *,
        do_lower_case: bool = False,
        split_by_punct: bool = False,
        model_max_length: int | None = None,
        **special_tokens: str,
    ) -> None:
        path = Path(vocab_file)
        if not path.is_file():
            raise MissingFileError(f"SentencePiece model file not found: {path}")
        unknown = set(special_tokens) - set(SPECIAL_TOKEN_KEYS)
        if unknown:
            raise TypeError(
                f"unknown special token argument(s) {sorted(unknown)}; expected {SPECIAL_TOKEN_KEYS}"
            )
        self._proto = path.read_bytes()
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self._proto)
        except RuntimeError as e:
            raise UsageError(f"{path} is not a valid SentencePiece model ({e})") from e
        self.vocab_file = str(path)
        self.do_lower_case = do_lower_case
        self.split_by_punct = split_by_punct
        self.model_max_length = model_max_length
        self.special_tokens = {
            k: _token_content(special_tokens.get(k, DEFAULT_SPECIAL_TOKENS[k])) for k in SPECIAL_TOKEN_KEYS
        }
        if not all(self.special_tokens.values()):
            raise UsageError(f"special tokens must be non-empty strings, got {self.special_tokens}")

        n_pieces = self.sp.GetPieceSize()
        self.added_tokens: dict[str, int] = {}
        for token in self.special_tokens.values():
            if self._piece_id(token) is None and token not in self.added_tokens:
                self.added_tokens[token] = n_pieces + len(self.added_tokens)
        self._added_by_id = {i: t for t, i in self.added_tokens.items()}
        self.all_special_ids = {self.convert_tokens_to_ids(t) for t in self.special_tokens.values()}
        # Longest first, so that a special token that contains another one wins (like transformers' trie).
        alternatives = sorted(set(self.special_tokens.values()), key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")

    # ---------------------------------------------------------------- vocabulary
    def _piece_id(self, piece: str) -> int | None:
        i = self.sp.PieceToId(piece)
        return i if self.sp.IdToPiece(i) == piece else None

    @property
    def vocab_size(self) -> int:
        """Number of SentencePiece pieces (as in transformers); `len(tokenizer)` adds the appended tokens."""
        return self.sp.GetPieceSize()

    def __len__(self) -> int:
        return self.vocab_size + len(self.added_tokens)

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.sp.IdToPiece(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens)
        return vocab

    def _token_id(self, key: str) -> int:
        return self.convert_tokens_to_ids(self.special_tokens[key])

    pad_token_id = property(lambda self: self._token_id("pad_token"))
    cls_token_id = property(lambda self: self._token_id("cls_token"))
    sep_token_id = property(lambda self: self._token_id("sep_token"))
    mask_token_id = property(lambda self: self._token_id("mask_token"))
    unk_token_id = property(lambda self: self._token_id("unk_token"))
    bos_token_id = property(lambda self: self._token_id("bos_token"))
    eos_token_id = property(lambda self: self._token_id("eos_token"))

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Pieces/special tokens to ids; unknown strings map to the [UNK] id."""
        if isinstance(tokens, str):
            if tokens in self.added_tokens:
                return self.added_tokens[tokens]
            i = self._piece_id(tokens)
            return i if i is not None else self.convert_tokens_to_ids(self.special_tokens["unk_token"])
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def _check_id(self, i: Any) -> int:
        try:
            i = operator.index(i)  # ints, numpy integers, 0-d integer tensors
        except TypeError:
            raise TypeError(f"token ids must be ints, got {type(i).__name__}") from None
        if not 0 <= i < len(self):
            raise UsageError(
                f"token id {i} is out of range for this tokenizer's vocabulary of size {len(self)}"
            )
        return i

    def _id_to_token(self, i: Any) -> str:
        i = self._check_id(i)
        return self._added_by_id[i] if i in self._added_by_id else self.sp.IdToPiece(i)

    def convert_ids_to_tokens(self, ids: Any) -> str | list[str]:
        if hasattr(ids, "tolist"):  # torch tensors, numpy arrays and scalars
            ids = ids.tolist()
        if isinstance(ids, int):
            return self._id_to_token(ids)
        return [self._id_to_token(i) for i in ids]

    # ---------------------------------------------------------------- encoding
    def _segments(self, text: str) -> Iterator[tuple[bool, str]]:
        """Yield (is_special, chunk): special tokens split out, text chunks stripped/lowercased/punct-split."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        parts = self._special_re.split(text)  # even indices: text, odd indices: special tokens
        for k, part in enumerate(parts):
            if k % 2:
                yield True, part
                continue
            if k > 0:
                part = part.lstrip()
            if k < len(parts) - 1:
                part = part.rstrip()
            if not part:
                continue
            if self.do_lower_case:
                part = part.lower()
            for chunk in split_on_punctuation(part) if self.split_by_punct else (part,):
                yield False, chunk

    def _segments_with_offsets(self, text: str) -> Iterator[tuple[bool, str, list[int]]]:
        """``_segments`` plus, per chunk, the index in ``text`` of each of its characters (and one past the last):
        the chunks are stripped, lower-cased and split, so their positions are tracked through those steps."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        pos = 0
        pieces: list[tuple[bool, int, int]] = []
        for match in self._special_re.finditer(text):
            pieces += [(False, pos, match.start()), (True, match.start(), match.end())]
            pos = match.end()
        pieces.append((False, pos, len(text)))
        for k, (special, start, end) in enumerate(pieces):
            if special:
                yield True, text[start:end], list(range(start, end + 1))
                continue
            if k > 0:
                while start < end and text[start].isspace():
                    start += 1
            if k < len(pieces) - 1:
                while end > start and text[end - 1].isspace():
                    end -= 1
            if start == end:
                continue
            chars, where = [], []
            for i in range(start, end):
                low = text[i].lower() if self.do_lower_case else text[i]
                chars.append(low)
                where += [i] * len(low)  # lower() may lengthen a character (İ -> i̇)
            part = "".join(chars)
            offset = 0
            for chunk in split_on_punctuation(part) if self.split_by_punct else (part,):
                yield False, chunk, where[offset:offset + len(chunk)] + [
                    where[offset + len(chunk) - 1] + 1]
                offset += len(chunk)

    def _encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """spm ids (exactly ``_encode_text``'s) and each piece's character span in ``text``.

        spm reports where each piece came from in the bytes it was given, through its normalisation (NFKC,
        whitespace collapsing): full-width letters, characters that become [UNK] and pieces that merge several
        characters all map back to the original characters. A leading space (spm's "▁") is not part of a span;
        a piece of whitespace alone keeps it.
        """
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for special, chunk, where in self._segments_with_offsets(text):
            if special:
                ids.append(self.convert_tokens_to_ids(chunk))
                offsets.append((where[0], where[-1]))
                continue
            data = chunk.encode("utf-8")
            byte_to_char = [0] * (len(data) + 1)
            b = 0
            for c, char in enumerate(chunk):
                n = len(char.encode("utf-8"))
                for j in range(n):
                    byte_to_char[b + j] = c
                b += n
            byte_to_char[len(data)] = len(chunk)
            pieces = list(self.sp.encode(chunk, out_type="proto").pieces)
            spans = []
            for piece in pieces:
                begin, end = byte_to_char[piece.begin], byte_to_char[piece.end]
                while begin < end and chunk[begin].isspace() and not chunk[begin:end].isspace():
                    begin += 1
                spans.append((begin, end))
            # A character that normalises to several pieces (№ -> "N" "o", … -> "." "." ".", ﬁ -> "f" "i") is the
            # surface of the last of them only: the others get its span too.
            for k in range(len(pieces) - 2, -1, -1):
                begin, end = spans[k]
                if pieces[k].piece.strip("\u2581") and not chunk[begin:end].strip():
                    nxt = spans[k + 1]
                    if chunk[nxt[0]:nxt[1]].strip() and nxt[0] >= begin:
                        spans[k] = nxt
            for piece, (begin, end) in zip(pieces, spans):
                ids.append(piece.id)
                offsets.append((where[begin], where[end - 1] + 1) if end > begin else (where[begin], where[begin]))
        return ids, offsets

    def tokenize(self, text: str) -> list[str]:
        """Pieces as the slow tokenizer returned them (unknown text keeps its surface form, like spm)."""
        return [
            tok
            for special, chunk in self._segments(text)
            for tok in ([chunk] if special else self.sp.encode(chunk, out_type=str))
        ]

    def _encode_text(self, text: str) -> list[int]:
        ids: list[int] = []
        for special, chunk in self._segments(text):
            ids.extend([self.convert_tokens_to_ids(chunk)] if special else self.sp.encode(chunk))
        return ids

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 3 if pair else 2

    def build_inputs_with_special_tokens(self, ids_a: list[int], ids_b: list[int] | None = None) -> list[int]:
        out = [self.cls_token_id, *ids_a, self.sep_token_id]
        return out if ids_b is None else [*out, *ids_b, self.sep_token_id]

    def create_token_type_ids_from_sequences(
        self, ids_a: list[int], ids_b: list[int] | None = None
    ) -> list[int]:
        first = [0] * (len(ids_a) + 2)
        return first if ids_b is None else first + [1] * (len(ids_b) + 1)

    @staticmethod
    def _truncate(
        a: list[int], b: list[int] | None, n_remove: int, strategy: str
    ) -> tuple[list, list | None]:
        """transformers' truncation semantics; raise when the chosen sequence cannot lose enough tokens."""
        if strategy == "only_second" and b is None:
            raise UsageError("truncation='only_second' needs a text_pair")
        if n_remove <= 0:
            return a, b
        if strategy == "longest_first" and b is not None:
            a, b = list(a), list(b)
            for _ in range(n_remove):  # one token at a time from the longer one; ties shorten the pair
                (a if len(a) > len(b) else b).pop()
            return a, b
        if strategy == "only_second":
            if len(b) <= n_remove:
                raise UsageError(
                    f"cannot truncate: the second sequence has {len(b)} tokens but {n_remove} must go "
                    f"to reach max_length; use truncation='longest_first' or a larger max_length"
                )
            return a, b[:-n_remove]
        if len(a) <= n_remove:
            raise UsageError(
                f"cannot truncate: the first sequence has {len(a)} tokens but {n_remove} must go to "
                f"reach max_length; use truncation='longest_first' or a larger max_length"
            )
        return a[:-n_remove], b

    def _sequence(self, text: Any, split_words: bool, offsets: bool) -> tuple[list[int], list, list]:
        """(ids, character spans, word ids) of one sequence. Split words are encoded one by one, each as a word
        of its own (spm's "▁" in front), their spans relative to the word."""
        if split_words:
            if not isinstance(text, (list, tuple)) or not all(isinstance(w, str) for w in text):
                raise TypeError("is_split_into_words=True takes a list of words (str) per sequence")
            ids, spans, words = [], [], []
            for k, word in enumerate(text):
                w_ids, w_spans = self._encode_with_offsets(word)
                ids += w_ids
                spans += w_spans
                words += [k] * len(w_ids)
            return ids, spans, words
        if not offsets:
            ids = self._encode_text(text)
            return ids, [(0, 0)] * len(ids), self._word_starts(ids)
        ids, spans = self._encode_with_offsets(text)
        return ids, spans, self._word_starts(ids)

    def _word_starts(self, ids: list[int]) -> list[int]:
        """Word index per piece: a new word at every piece that begins with "▁" (and at special tokens)."""
        words, k = [], -1
        for i in ids:
            piece = self._id_to_token(i)
            if k < 0 or piece.startswith("\u2581") or i in self.all_special_ids:
                k += 1
            words.append(k)
        return words

    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]],
        text_pair: str | Sequence[str] | None = None,
        *,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool = True,
        return_attention_mask: bool = True,
        add_special_tokens: bool = True,
        return_offsets_mapping: bool = False,
        is_split_into_words: bool = False,
        return_overflowing_tokens: bool = False,
        stride: int = 0,
    ) -> BatchEncoding:
        """Encode one text (or pair) or a batch; lists of ids unless return_tensors='pt'.

        ``return_offsets_mapping``: each token's (start, end) character span in its own text ((0, 0) for special
        and padding tokens). ``is_split_into_words``: the text is a list of words (a batch: a list of such lists);
        ``word_ids()`` then maps tokens to words. ``return_overflowing_tokens`` with ``stride`` (and truncation
        ``only_second`` for pairs, e.g. question + context): the truncated sequence is cut into windows of
        ``max_length`` that overlap by ``stride`` tokens, each a row; ``overflow_to_sample_mapping`` gives each
        row's example. Ids never change with these options.
        """
        if is_split_into_words:
            batched = isinstance(text, (list, tuple)) and len(text) > 0 and isinstance(text[0], (list, tuple))
        else:
            batched = isinstance(text, (list, tuple))
            if not batched and not isinstance(text, str):
                raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
        texts = list(text) if batched else [text]
        if text_pair is None:
            pairs: list[Any] = [None] * len(texts)
        elif batched != isinstance(text_pair, (list, tuple)) or (batched and len(text_pair) != len(texts)):
            if not (is_split_into_words and not batched and isinstance(text_pair, (list, tuple))):
                raise UsageError(
                    "text_pair must match text: a str for a str, a list of the same length for a list "
                    f"(got {type(text_pair).__name__} for {type(text).__name__})"
                )
            pairs = [text_pair]
        else:
            pairs = list(text_pair) if batched else [text_pair]

        trunc = {False: None, None: None, "do_not_truncate": None, True: "longest_first"}.get(
            truncation, truncation
        )
        pad = {False: None, None: None, "do_not_pad": None, True: "longest"}.get(padding, padding)
        if trunc not in (None, "longest_first", "only_first", "only_second"):
            raise UsageError(f"unknown truncation strategy {truncation!r}")
        if pad not in (None, "longest", "max_length"):
            raise UsageError(f"unknown padding strategy {padding!r}")
        if return_tensors not in (None, "pt"):
            raise UsageError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        if max_length is None and (trunc or pad == "max_length"):
            max_length = self.model_max_length
            if max_length is None:
                raise UsageError(
                    "truncation / padding='max_length' need max_length (this tokenizer has no "
                    "model_max_length)"
                )
        if return_overflowing_tokens and not trunc:
            raise UsageError("return_overflowing_tokens needs truncation (and max_length)")
        if stride < 0:
            raise UsageError(f"stride must be >= 0, got {stride}")

        # Each row: (ids, token types, spans, word ids, sequence ids, example index).
        rows: list[tuple[list, list, list, list, list, int]] = []
        for index, (a_text, b_text) in enumerate(zip(texts, pairs)):
            a = self._sequence(a_text, is_split_into_words, return_offsets_mapping)
            b = None if b_text is None else self._sequence(b_text, is_split_into_words, return_offsets_mapping)
            n_special = self.num_special_tokens_to_add(b is not None) if add_special_tokens else 0
            if trunc and max_length < n_special:
                raise UsageError(f"max_length={max_length} is shorter than the {n_special} special tokens")
            for a_part, b_part in self._windows(a, b, n_special, trunc, max_length, return_overflowing_tokens,
                                                stride):
                rows.append((*self._assemble(a_part, b_part, add_special_tokens), index))

        width = max((len(r[0]) for r in rows), default=0) if pad == "longest" else max_length
        enc: dict[str, list] = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        if return_offsets_mapping:
            enc["offset_mapping"] = []
        if return_overflowing_tokens:
            enc["overflow_to_sample_mapping"] = []
        word_ids, sequence_ids = [], []
        for ids, types, spans, words, seqs, index in rows:
            n_pad = max(0, width - len(ids)) if pad else 0
            enc["input_ids"].append(ids + [self.pad_token_id] * n_pad)
            enc["token_type_ids"].append(types + [0] * n_pad)
            enc["attention_mask"].append([1] * len(ids) + [0] * n_pad)
            if return_offsets_mapping:
                enc["offset_mapping"].append(spans + [(0, 0)] * n_pad)
            if return_overflowing_tokens:
                enc["overflow_to_sample_mapping"].append(index)
            word_ids.append(words + [None] * n_pad)
            sequence_ids.append(seqs + [None] * n_pad)
        if not return_token_type_ids:
            del enc["token_type_ids"]
        if not return_attention_mask:
            del enc["attention_mask"]

        if return_tensors == "pt":
            import torch

            if len({len(ids) for ids in enc["input_ids"]}) > 1:
                raise UsageError(
                    "return_tensors='pt' needs sequences of equal length; pass padding=True "
                    "(or padding='max_length' with max_length) to pad them"
                )
            return BatchEncoding({k: torch.tensor(v, dtype=torch.long) for k, v in enc.items()}, word_ids,
                                 sequence_ids)
        if batched or return_overflowing_tokens:
            return BatchEncoding(enc, word_ids, sequence_ids)
        return BatchEncoding({k: v[0] for k, v in enc.items()}, word_ids, sequence_ids)

    def _windows(self, a: tuple, b: tuple | None, n_special: int, trunc: str | None, max_length: int | None,
                 overflow: bool, stride: int):
        """The (first, second) sequence parts of each row: one truncated row, or overlapping windows."""
        def cut(seq: tuple, n: int, start: int = 0) -> tuple:
            return tuple(x[start:start + n] for x in seq)

        if not trunc:
            yield a, b
            return
        total = len(a[0]) + len(b[0] if b else []) + n_special
        if not overflow:
            kept_a, kept_b = self._truncate(a[0], b[0] if b else None, total - max_length, trunc)
            yield cut(a, len(kept_a)), (cut(b, len(kept_b)) if b else None)
            return
        if b is not None and trunc == "longest_first":
            raise UsageError("return_overflowing_tokens with a text pair needs truncation='only_second' "
                             "(windows over the second text, e.g. the context of a question) or 'only_first'")
        moving, fixed = (b, a) if b is not None and trunc == "only_second" else (a, b)
        room = max_length - n_special - (len(fixed[0]) if fixed else 0)
        if room <= stride:
            raise UsageError(f"max_length={max_length} leaves {room} tokens per window for the truncated text, not "
                             f"more than stride={stride}: increase max_length or lower the stride")
        start = 0
        while True:
            part = cut(moving, room, start)
            yield (fixed, part) if moving is b else (part, fixed)
            if start + room >= len(moving[0]):
                break
            start += room - stride

    def _assemble(self, a: tuple, b: tuple | None, specials: bool) -> tuple[list, list, list, list, list]:
        """ids, token types, spans, word ids and sequence ids of a row, special tokens around the sequences."""
        a_ids, a_spans, a_words = a
        b_ids, b_spans, b_words = b if b is not None else ([], [], [])
        if not specials:
            return (a_ids + b_ids, [0] * len(a_ids) + [1] * len(b_ids), a_spans + b_spans, a_words + b_words,
                    [0] * len(a_ids) + [1] * len(b_ids))
        ids = self.build_inputs_with_special_tokens(a_ids, b_ids if b is not None else None)
        types = self.create_token_type_ids_from_sequences(a_ids, b_ids if b is not None else None)
        spans = [(0, 0), *a_spans, (0, 0)] + ([*b_spans, (0, 0)] if b is not None else [])
        words = [None, *a_words, None] + ([*b_words, None] if b is not None else [])
        seqs = [None, *[0] * len(a_ids), None] + ([*[1] * len(b_ids), None] if b is not None else [])
        return ids, types, spans, words, seqs

    def encode(
        self, text: str, text_pair: str | None = None, add_special_tokens: bool = True, **kwargs: Any
    ) -> list[int]:
        """Ids of one text (or pair); kwargs as in __call__ (truncation, max_length, padding)."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a single str, got {type(text).__name__}; use __call__ for batches")
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    # ---------------------------------------------------------------- decoding
    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """spm-decode runs of ordinary pieces; special tokens as strings, spaced like the slow tokenizer."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        ids = [ids] if isinstance(ids, int) else list(ids)
        if any(isinstance(i, (list, tuple)) for i in ids):
            raise UsageError("decode takes one sequence of ids; use batch_decode for a batch")
        out, run, prev_special = "", [], False
        for i in map(self._check_id, ids):
            if i not in self.all_special_ids:
                run.append(i)
                prev_special = False
            elif not skip_special_tokens:
                # Slow SPMTokenizer.decode: a space before a special token unless another one precedes it.
                out += ("" if prev_special else " ") + self.sp.decode(run) + self._id_to_token(i)
                run, prev_special = [], True
        return (out + self.sp.decode(run)).strip()

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    # ---------------------------------------------------------------- persistence
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], **overrides: Any) -> DebertaTokenizer:
        """Load from a folder with spm.model (+ tokenizer_config.json), an spm file, or a hub model id."""
        path = Path(name_or_path).expanduser()
        if path.is_file():
            return cls(path, **overrides)
        if not path.is_dir():
            name = str(name_or_path)
            if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
                raise MissingFileError(f"tokenizer folder not found: {name}")
            from mdeberta.checkpoint import resolve_model_dir  # lazy: only hub ids need the hub machinery

            path = Path(
                resolve_model_dir(name, allow_patterns=[SPM_FILE, CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE])
            )
        config: dict[str, Any] = {}
        for name in (SPECIAL_TOKENS_MAP_FILE, CONFIG_FILE):  # the config wins over the map
            if (path / name).is_file():
                config.update(json.loads((path / name).read_text(encoding="utf-8")))
        kwargs: dict[str, Any] = {k: config[k] for k in ("do_lower_case", "split_by_punct") if k in config}
        kwargs.update({k: _token_content(config[k]) for k in SPECIAL_TOKEN_KEYS if config.get(k) is not None})
        max_len = config.get("model_max_length")
        if isinstance(max_len, int) and max_len < _NO_MAX_LENGTH:
            kwargs["model_max_length"] = max_len
        kwargs.update(overrides)
        return cls(path / SPM_FILE, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> str:
        """Write spm.model + configs in the layout transformers' AutoTokenizer also understands."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / SPM_FILE).write_bytes(self._proto)
        config: dict[str, Any] = {
            "tokenizer_class": "DebertaV2Tokenizer",
            "vocab_type": "spm",
            "do_lower_case": self.do_lower_case,
            "split_by_punct": self.split_by_punct,
            **self.special_tokens,
        }
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        # Pin the ids of appended tokens so that other loaders cannot renumber them.
        flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        config["added_tokens_decoder"] = {
            str(i): {"content": t, **flags} for t, i in self.added_tokens.items()
        }
        for name, data in ((CONFIG_FILE, config), (SPECIAL_TOKENS_MAP_FILE, self.special_tokens)):
            (out / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return str(out)


# -------------------------------------------------------------------- training
def expand_text_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    suffixes: tuple[str, ...] = (".txt", ".txt.gz"),
) -> list[Path]:
    """Files as given; folders expand to their files ending in ``suffixes`` (sorted)."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.name.endswith(suffixes))
            if not found:
                raise MissingFileError(f"no {' / '.join('*' + s for s in suffixes)} files in folder {item}")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise MissingFileError(f"training text not found: {item}")
    if not files:
        raise UsageError("no training files given")
    return files


def _read_lines(files: Sequence[Path], lowercase: bool) -> Iterator[str]:
    """Stream non-empty lines; .gz files are decompressed on the fly, never to disk."""
    for path in files:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line.lower() if lowercase else line


def train_tokenizer(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    vocab_size: int = 32000,
    *,
    character_coverage: float = 0.9995,
    byte_fallback: bool = False,
    model_type: str = "unigram",
    input_sentence_size: int = 2_000_000,
    seed: int = 42,
    lowercase: bool = False,
    split_digits: bool = True,
    num_threads: int | None = None,
    verbose: bool = False,
) -> str:
    """Train a SentencePiece model with DeBERTa-V3's id layout and save it as a DebertaTokenizer folder.

    [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3 live in the spm; [MASK] is deliberately *not* a user-defined symbol, so
    the tokenizer appends it at id = number of pieces, exactly like the released checkpoints.
    character_coverage 0.9995 keeps rare CJK/Thai characters from bloating the vocabulary.
    """
    paths = expand_text_inputs(files)
    if model_type not in ("unigram", "bpe"):
        raise UsageError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
    names = ", ".join(str(p) for p in paths)
    if next(_read_lines(paths, False), None) is None:
        raise UsageError(f"no non-empty lines of text in {names}")
    spm.set_random_generator_seed(seed)  # makes the input_sentence_size sampling reproducible
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_read_lines(paths, lowercase),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            split_digits=split_digits,
            normalization_rule_name="nmt_nfkc",
            **DEBERTA_SPM_LAYOUT,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            max_sentence_length=16384,
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=0 if verbose else 2,
        )
    except RuntimeError as e:
        reason = str(e).split("]")[-1].strip()
        if "Vocabulary size too high" in reason:
            raise UsageError(
                f"vocab_size={vocab_size} is too large for the text in {names} ({reason}); "
                "use a smaller vocab size or train on more text"
            ) from e
        if "smaller than required_chars" in reason:
            raise UsageError(
                f"vocab_size={vocab_size} is too small for the characters in {names} ({reason}); "
                "use a larger vocab size or a lower character_coverage"
            ) from e
        raise UsageError(f"sentencepiece training on {names} failed: {e}") from e
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPM_FILE).write_bytes(model.getvalue())
    return DebertaTokenizer(out / SPM_FILE, do_lower_case=lowercase).save_pretrained(out)


# -------------------------------------------------------------------- CLI
def _train_command(args: argparse.Namespace) -> int:
    folder = train_tokenizer(
        args.input,
        args.output_dir,
        args.vocab_size,
        character_coverage=args.character_coverage,
        byte_fallback=args.byte_fallback,
        lowercase=args.lowercase,
        input_sentence_size=args.input_sentence_size,
        seed=args.seed,
        num_threads=args.num_threads,
        verbose=getattr(args, "verbose", False),
    )
    tok = DebertaTokenizer.from_pretrained(folder)
    print(f"wrote {folder}: {tok.vocab_size} pieces + [MASK]={tok.mask_token_id}")
    return 0


def add_tokenizer_cli(subparsers: Any) -> None:
    """Register `tokenizer train` on the main CLI's argparse subparsers."""
    parser = subparsers.add_parser("tokenizer", help="train SentencePiece tokenizers in DeBERTa-V3 layout")
    commands = parser.add_subparsers(dest="tokenizer_command", metavar="COMMAND", required=True)
    train = commands.add_parser(
        "train",
        help="train a unigram spm model from text files",
        description="Train a SentencePiece model with DeBERTa-V3's id layout ([MASK] appended after the pieces).",
    )
    train.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="text files (.txt or .txt.gz, one sentence per line) or folders of them",
    )
    output = train.add_argument("--output-dir", required=True,
                                help="folder to write spm.model and tokenizer configs to")
    from mdeberta.arguments import add_alias

    add_alias(train, "--output", output)
    train.add_argument("--vocab-size", type=int, default=32000)
    train.add_argument("--character-coverage", type=float, default=0.9995)
    train.add_argument("--byte-fallback", action="store_true", help="encode unknown characters as bytes")
    train.add_argument("--lowercase", action="store_true", help="lowercase text (sets do_lower_case)")
    train.add_argument(
        "--input-sentence-size",
        type=int,
        default=2_000_000,
        help="sample at most this many lines for training",
    )
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--num-threads", type=int, default=None)
    train.set_defaults(func=_train_command)
