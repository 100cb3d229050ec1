"""Tokenizers read from local vocabulary files: GPT-2 byte-level BPE and BERT WordPiece.

Written here (no new dependency), following the reference algorithms (OpenAI's GPT-2 encoder,
Google's BERT tokenization, as Hugging Face's slow tokenizers implement them). Tested on small
vocabularies with hand-derived encodings; not run here on the real 50,257 / 30,522-token files.

- `gpt2(vocab_file, merges_file)`: GPT-2's byte-level BPE. `vocab.json` maps token -> id (50,257
  entries for GPT-2, `<|endoftext|>` = 50256), `merges.txt` lists the merges by rank (first line
  `#version: ...`). Text is split with GPT-2's pre-tokenisation pattern
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`,
  evaluated by a hand-written scanner over Unicode categories (L*: letters, N*: numbers;
  whitespace = Unicode White_Space, i.e. `str.isspace()` minus U+001C..U+001F; compared once with
  the `regex` package on 200,000 random strings: identical). Each piece's UTF-8 bytes are mapped to
  printable characters (GPT-2's byte-to-unicode table), then merged pairwise, lowest merge rank
  first. `encode` never treats `<|endoftext|>` in the text specially: append
  `special_ids['eos']` yourself.
- `bert(vocab_file, do_lower_case=True)`: BERT's WordPiece. `vocab.txt` holds one token per line
  (id = line number). Basic tokenisation (drop NUL, U+FFFD and control characters (Unicode Cc, Cf,
  Co, Cs; unassigned code points are kept, as in Hugging Face `tokenizers`), whitespace ->
  space, spaces around CJK ideographs, split on whitespace; lower-case and strip accents (NFD,
  drop Mn) when do_lower_case; split off every punctuation character; [UNK], [SEP], [PAD], [CLS],
  [MASK] are never split), then greedy longest-match-first WordPiece with `##` continuations; a word
  longer than 100 characters or with no full cover becomes [UNK].

- `from_gguf(checkpoint)`: the byte-level BPE vocabulary stored in a GGUF file (tokens, merges, the
  pre-tokenizer named by `tokenizer.ggml.pre`: `gpt2`, or `smollm` = every number character alone,
  then GPT-2's pattern). Checked against Hugging Face `tokenizers` built from the same tokens and
  merges on real text (tests/nlp/test_llama.py).

The files come from the Hugging Face model repositories (`FILES` gives the address of each);
a missing or empty path raises a one-line ValueError naming the argument and where to get it.
"""
import json
import os
import unicodedata
from typing import Callable, NamedTuple, Sequence

HF = 'https://huggingface.co'
# (argument name, model) -> (file name, address to download it from)
FILES = {
    ('vocab_file', 'gpt2'): ('vocab.json', f'{HF}/openai-community/gpt2/resolve/main/vocab.json'),
    ('merges_file', 'gpt2'): ('merges.txt', f'{HF}/openai-community/gpt2/resolve/main/merges.txt'),
    ('vocab_file', 'bert'): ('vocab.txt',
                             f'{HF}/google-bert/bert-base-uncased/resolve/main/vocab.txt'),
}
GPT2_EOS = '<|endoftext|>'
BERT_SPECIAL = ('[UNK]', '[SEP]', '[PAD]', '[CLS]', '[MASK]')
_MAX_WORDPIECE_CHARS = 100


class Tokenizer(NamedTuple):
  """A tokenizer as pure functions of its vocabulary (host-side Python, not jitted).

  tokenize(text) -> list[str]; encode(text) -> list[int] (no special tokens added);
  decode(ids) -> str; vocab_size: number of ids; special_ids: {'eos': ...} (GPT-2) or
  {'unk', 'sep', 'pad', 'cls', 'mask': ...} (BERT).
  """
  name: str
  vocab_size: int
  tokenize: Callable[[str], list]
  encode: Callable[[str], list]
  decode: Callable[[Sequence[int]], str]
  special_ids: dict


def check_file(arg: str, path: str, model: str, field: str = '') -> str:
  """Returns `path` if it names a file, else raises a one-line ValueError with the remedy.

  field: the config field that holds the path (e.g. 'data.vocab_file'), named in the message.
  """
  name, url = FILES[(arg, model)]
  if not isinstance(path, str) or not path or not os.path.isfile(path):
    what = 'is empty' if not path else 'does not exist'
    where = f' ({field})' if field else ''
    raise ValueError(f'{arg}={path!r}{where} {what}; allowed: the path of {model}\'s {name}, from '
                     f'the Hugging Face model repository ({url})')
  return path


# ----------------------------------------------------------------------------- GPT-2 byte-level BPE


def bytes_to_unicode() -> dict:
  """GPT-2's table byte (0..255) -> printable character: printable Latin-1 bytes map to themselves,
  the other 68 to U+0100 onwards in byte order."""
  keep = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1),
          *range(ord('®'), ord('ÿ') + 1)]
  table, extra = {}, 0
  for b in range(256):
    if b in keep:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return table


def _cat(c: str) -> str:
  return unicodedata.category(c)[0]


def _is_space(c: str) -> bool:
  return c.isspace() and not '\x1c' <= c <= '\x1f'


def _is_other(c: str) -> bool:
  return not _is_space(c) and _cat(c) not in 'LN'


def _run(text: str, i: int, pred: Callable[[str], bool]) -> int:
  while i < len(text) and pred(text[i]):
    i += 1
  return i


def gpt2_pretokenize(text: str) -> list:
  """Splits text as GPT-2's regex does (see the module docstring); ''.join(pieces) == text."""
  pieces, i, n = [], 0, len(text)
  classes = (lambda c: _cat(c) == 'L', lambda c: _cat(c) == 'N', _is_other)
  while i < n:
    j = None
    if text[i] == "'":
      for suffix in ('s', 't', 're', 've', 'm', 'll', 'd'):
        if text.startswith(suffix, i + 1):
          j = i + 1 + len(suffix)
          break
    if j is None:
      for pred in classes:                  # ` ?X+` for X = letters, numbers, other
        if text[i] == ' ' and i + 1 < n and pred(text[i + 1]):
          j = _run(text, i + 1, pred)
          break
        if pred(text[i]):
          j = _run(text, i, pred)
          break
    if j is None:                           # whitespace: `\s+(?!\S)`, else `\s+`
      k = _run(text, i, _is_space)
      j = k if k == n or k - i == 1 else k - 1
    pieces.append(text[i:j])
    i = j
  return pieces


def bpe_merge(word: str, ranks: dict) -> list:
  """Merges the characters of `word` pairwise, lowest rank first, until no ranked pair is left."""
  symbols = list(word)
  while len(symbols) > 1:
    pairs = [(ranks.get((a, b)), k) for k, (a, b) in enumerate(zip(symbols, symbols[1:]))]
    best = min((r for r, _ in pairs if r is not None), default=None)
    if best is None:
      break
    a, b = next((symbols[k], symbols[k + 1]) for r, k in pairs if r == best)
    merged, k = [], 0
    while k < len(symbols):
      if k + 1 < len(symbols) and symbols[k] == a and symbols[k + 1] == b:
        merged.append(a + b)
        k += 2
      else:
        merged.append(symbols[k])
        k += 1
    symbols = merged
  return symbols


def read_merges(merges_file: str) -> dict:
  """{(left, right): rank} from merges.txt (a `#version` first line and blank lines skipped)."""
  ranks = {}
  with open(merges_file, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      line = line.rstrip('\n')
      if not line.strip() or (lineno == 1 and line.startswith('#version')):
        continue
      parts = line.split()
      if len(parts) != 2:
        raise ValueError(f'merges_file={merges_file!r} line {lineno} is {line!r}; allowed: two '
                         'space-separated symbols per line (GPT-2 merges.txt)')
      ranks.setdefault((parts[0], parts[1]), len(ranks))
  return ranks


def gpt2(vocab_file: str, merges_file: str) -> Tokenizer:
  """GPT-2's byte-level BPE tokenizer from vocab.json and merges.txt (see the module docstring)."""
  check_file('vocab_file', vocab_file, 'gpt2')
  check_file('merges_file', merges_file, 'gpt2')
  try:
    with open(vocab_file, encoding='utf-8') as f:
      vocab = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f'vocab_file={vocab_file!r} is not valid JSON ({e}); allowed: GPT-2 '
                     'vocab.json, an object token -> id') from None
  if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
    raise ValueError(f'vocab_file={vocab_file!r} is invalid; allowed: a JSON object token -> '
                     'integer id (GPT-2 vocab.json)')
  ids = sorted(vocab.values())
  if ids != list(range(len(ids))):
    raise ValueError(f'vocab_file={vocab_file!r} has ids that are not 0 .. {len(ids) - 1} each '
                     'once; allowed: a GPT-2 vocab.json')
  special = {'eos': vocab[GPT2_EOS]} if GPT2_EOS in vocab else {}
  return byte_level_bpe('gpt2', vocab, read_merges(merges_file), gpt2_pretokenize, special,
                        f'vocab_file={vocab_file!r}')


def byte_level_bpe(name: str, vocab: dict, ranks: dict, pretokenize: Callable[[str], list],
                   special_ids: dict, source: str) -> Tokenizer:
  """A byte-level BPE Tokenizer: vocab {token: id} (ids 0..V-1), ranks {(left, right): rank},
  pretokenize(text) -> pieces; source names the vocabulary in error messages."""
  byte_enc = bytes_to_unicode()
  byte_dec = {c: b for b, c in byte_enc.items()}
  inverse = {i: t for t, i in vocab.items()}
  cache = {}                                 # piece -> ids (memoised; the result never changes)

  def piece_tokens(piece: str) -> list:
    return bpe_merge(''.join(byte_enc[b] for b in piece.encode('utf-8')), ranks)

  def tokenize(text: str) -> list:
    return [t for piece in pretokenize(text) for t in piece_tokens(piece)]

  def encode(text: str) -> list:
    out = []
    for piece in pretokenize(text):
      if piece not in cache:
        toks = piece_tokens(piece)
        missing = [t for t in toks if t not in vocab]
        if missing:
          raise ValueError(f'token {missing[0]!r} (from {piece!r}) is not in {source}; allowed: '
                           'a vocabulary that matches its merges')
        cache[piece] = [vocab[t] for t in toks]
      out.extend(cache[piece])
    return out

  def decode(token_ids: Sequence[int]) -> str:
    out = bytearray()
    for i in token_ids:
      token = inverse[int(i)]
      if all(c in byte_dec for c in token):
        out.extend(byte_dec[c] for c in token)
      else:                                  # an added token such as <|endoftext|>: verbatim
        out.extend(token.encode('utf-8'))
    return out.decode('utf-8', errors='replace')

  return Tokenizer(name, len(vocab), tokenize, encode, decode, special_ids)


# ----------------------------------------------------------------------------- GGUF vocabularies


def smollm_pretokenize(text: str) -> list:
  """llama.cpp's `smollm` pre-tokenizer (LLAMA_VOCAB_PRE_TYPE_SMOLLM; Hugging Face: Digits with
  individual_digits, then ByteLevel): the regexes `\\p{N}` then GPT-2's pattern, applied in turn.

  Every number character (Unicode N*) is a piece of its own; each run of text between them is split
  by `gpt2_pretokenize` (llama.cpp lists GPT-2's pattern without its final `\\s+`, but it keeps
  unmatched text as pieces, which gives the same split). ''.join(pieces) == text.
  """
  pieces, start = [], 0
  for i, c in enumerate(text):
    if _cat(c) == 'N':
      if start < i:
        pieces.extend(gpt2_pretokenize(text[start:i]))
      pieces.append(c)
      start = i + 1
  if start < len(text):
    pieces.extend(gpt2_pretokenize(text[start:]))
  return pieces


# GGUF `tokenizer.ggml.pre` -> pre-tokenizer (llama.cpp's names).
GGUF_PRETOKENIZERS = {'gpt2': gpt2_pretokenize, 'smollm': smollm_pretokenize}


def from_gguf(checkpoint: str, field: str = 'checkpoint') -> Tokenizer:
  """The byte-level BPE tokenizer stored in a GGUF file (a path, or a preset of
  models/gguf_checkpoint.py such as 'smollm2_135m').

  Reads `tokenizer.ggml.model` (must be 'gpt2': byte-level BPE), `.tokens` (id = position),
  `.merges` ('left right' strings by rank), `.pre` (a key of GGUF_PRETOKENIZERS) and the special
  ids `.bos_token_id`, `.eos_token_id`, `.unknown_token_id`, `.padding_token_id` (as 'bos', 'eos',
  'unk', 'pad' where present). `encode` adds no special token and treats none in the text
  specially; token ids of the GGUF's control tokens are plain vocabulary entries here.
  """
  from fedjax_intrinsic.models import gguf_checkpoint  # pylint: disable=import-outside-toplevel
  path = gguf_checkpoint.resolve(checkpoint, field)
  meta = gguf_checkpoint.read_metadata(path)
  kind, pre = meta.get('tokenizer.ggml.model'), meta.get('tokenizer.ggml.pre', 'gpt2')
  if kind != 'gpt2':
    raise ValueError(f'{field}={checkpoint!r} has tokenizer.ggml.model={kind!r}; allowed: '
                     "'gpt2' (byte-level BPE)")
  if pre not in GGUF_PRETOKENIZERS:
    raise ValueError(f'{field}={checkpoint!r} has tokenizer.ggml.pre={pre!r}; allowed: '
                     f'{", ".join(GGUF_PRETOKENIZERS)}')
  tokens, merges = meta.get('tokenizer.ggml.tokens'), meta.get('tokenizer.ggml.merges')
  if not tokens or not merges:
    raise ValueError(f'{field}={checkpoint!r} lacks tokenizer.ggml.tokens or .merges; allowed: '
                     'a GGUF with a byte-level BPE vocabulary')
  vocab = {}
  for i, t in enumerate(tokens):
    vocab.setdefault(t, i)
  if len(vocab) != len(tokens):
    raise ValueError(f'{field}={checkpoint!r} repeats a token in tokenizer.ggml.tokens; allowed: '
                     'distinct tokens')
  ranks = {}
  for rank, m in enumerate(merges):
    parts = m.split(' ')
    if len(parts) != 2:
      raise ValueError(f'{field}={checkpoint!r} merge {rank} is {m!r}; allowed: two symbols '
                       'separated by one space')
    ranks.setdefault((parts[0], parts[1]), rank)
  special = {name: int(meta[f'tokenizer.ggml.{key}_token_id'])
             for name, key in (('bos', 'bos'), ('eos', 'eos'), ('unk', 'unknown'),
                               ('pad', 'padding'))
             if meta.get(f'tokenizer.ggml.{key}_token_id') is not None}
  return byte_level_bpe(f'gguf:{pre}', vocab, ranks, GGUF_PRETOKENIZERS[pre], special,
                        f'{field}={checkpoint!r}')


# ----------------------------------------------------------------------------- BERT WordPiece


def _is_control(c: str) -> bool:
  # Cc, Cf, Co, Cs; unassigned code points (Cn) are kept (they become [UNK]), as Hugging Face's
  # `tokenizers` does (Google's reference and HF's slow tokenizer drop every C* category).
  return c not in '\t\n\r' and unicodedata.category(c) in ('Cc', 'Cf', 'Co', 'Cs')


def _is_whitespace(c: str) -> bool:
  return c in ' \t\n\r' or unicodedata.category(c) == 'Zs'


def _is_punctuation(c: str) -> bool:
  cp = ord(c)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(c).startswith('P')


def _is_cjk(cp: int) -> bool:
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
          or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
          or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def bert_basic_tokenize(text: str, do_lower_case: bool = True,
                        never_split: Sequence[str] = BERT_SPECIAL) -> list:
  """BERT's basic tokenisation (see the module docstring): words and punctuation, no WordPiece."""
  chars = []
  for c in text:
    if c == '\0' or c == '\ufffd' or _is_control(c):
      continue
    if _is_cjk(ord(c)):
      chars.extend((' ', c, ' '))
    else:
      chars.append(' ' if _is_whitespace(c) else c)
  out = []
  for word in ''.join(chars).split():
    if word in never_split:
      out.append(word)
      continue
    if do_lower_case:
      word = ''.join(c for c in unicodedata.normalize('NFD', word.lower())
                     if unicodedata.category(c) != 'Mn')
    current = []
    for c in word:
      if _is_punctuation(c):
        if current:
          out.append(''.join(current))
          current = []
        out.append(c)
      else:
        current.append(c)
    if current:
      out.append(''.join(current))
  return out


def wordpiece(word: str, vocab: dict, unk: str = '[UNK]') -> list:
  """Greedy longest-match-first split of one word into vocab pieces (`##` marks continuations)."""
  if len(word) > _MAX_WORDPIECE_CHARS:
    return [unk]
  pieces, start = [], 0
  while start < len(word):
    end = len(word)
    while end > start:
      piece = word[start:end] if start == 0 else '##' + word[start:end]
      if piece in vocab:
        break
      end -= 1
    if end == start:
      return [unk]
    pieces.append(piece)
    start = end
  return pieces


def bert(vocab_file: str, do_lower_case: bool = True) -> Tokenizer:
  """BERT's WordPiece tokenizer from vocab.txt (see the module docstring)."""
  check_file('vocab_file', vocab_file, 'bert')
  with open(vocab_file, encoding='utf-8') as f:
    lines = [line.rstrip('\n') for line in f]
  vocab = {t: i for i, t in enumerate(lines)}   # id = line number (a repeated token: its last line)
  missing = [t for t in ('[UNK]', '[SEP]', '[PAD]', '[CLS]') if t not in vocab]
  if missing:
    raise ValueError(f'vocab_file={vocab_file!r} lacks {", ".join(missing)}; allowed: a BERT '
                     'vocab.txt (one token per line, with [PAD], [UNK], [CLS], [SEP])')
  pieces_of = {}                                 # word -> its pieces (a pure function: cached)

  def pieces(word: str) -> list:
    if word not in pieces_of:
      pieces_of[word] = [word] if word in BERT_SPECIAL else wordpiece(word, vocab)
    return pieces_of[word]

  def tokenize(text: str) -> list:
    return [p for w in bert_basic_tokenize(text, do_lower_case) for p in pieces(w)]

  def encode(text: str) -> list:
    return [vocab[t] for t in tokenize(text)]

  def decode(token_ids: Sequence[int]) -> str:
    text = ' '.join(lines[int(i)] for i in token_ids)
    return text.replace(' ##', '')

  special = {k.strip('[]').lower(): vocab[k] for k in BERT_SPECIAL if k in vocab}
  return Tokenizer('bert', len(lines), tokenize, encode, decode, special)


def bert_classification_ids(tokenizer: Tokenizer, text: str, seq_len: int) -> tuple[list, bool]:
  """[CLS] + the text's first seq_len - 2 pieces + [SEP], padded with [PAD] to seq_len.

  Returns (ids: seq_len ints, truncated: whether pieces were cut).
  """
  s = tokenizer.special_ids
  pieces = tokenizer.encode(text)
  body = pieces[:seq_len - 2]
  ids = [s['cls']] + body + [s['sep']]
  return ids + [s['pad']] * (seq_len - len(ids)), len(body) < len(pieces)
