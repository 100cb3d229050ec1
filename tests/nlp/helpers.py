"""Tiny vocabulary files, PersonaChat JSON and random tensors, written by the NLP tests.

GPT-2 BPE vocabulary (`gpt2_files`): ids 0..255 are the 256 byte symbols (id = byte value), then
the merges, by rank, with their results' ids:
  0 'l l' -> ll 256, 1 'h e' -> he 257, 2 'Ġ w' -> Ġw 258, 3 'he ll' -> hell 259,
  4 'o r' -> or 260, 5 'Ġw or' -> Ġwor 261; and '<|endoftext|>' 262.
BERT vocabulary (`bert_vocab`): BERT_TOKENS, id = position, then the letters a..j and ##a..##j
missing from it.
"""
import json

import numpy as np

from fedjax_intrinsic import tokenizers

MERGES = [('l', 'l'), ('h', 'e'), ('Ġ', 'w'), ('he', 'll'), ('o', 'r'), ('Ġw', 'or')]
EOS = 262
BERT_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'un', '##aff', '##able', 'the', 'cafe',
               ',', '!', 'runn', '##ing', 'run', 'a', '##b']
# Single letters a..j and their continuations: every mocked SST-2 sentence (letters a..j) encodes.
LETTERS = 'abcdefghij'


def write_gpt2_files(directory) -> tuple[str, str]:
  byte_enc = tokenizers.bytes_to_unicode()
  vocab = {byte_enc[b]: b for b in range(256)}
  for a, b in MERGES:
    vocab[a + b] = len(vocab)
  vocab[tokenizers.GPT2_EOS] = len(vocab)
  vocab_file, merges_file = directory / 'vocab.json', directory / 'merges.txt'
  vocab_file.write_text(json.dumps(vocab), encoding='utf-8')
  merges_file.write_text('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in MERGES),
                         encoding='utf-8')
  return str(vocab_file), str(merges_file)


def write_bert_vocab(directory) -> str:
  path = directory / 'vocab.txt'
  extra = [c for c in LETTERS if c not in BERT_TOKENS] + ['##' + c for c in LETTERS
                                                          if '##' + c not in BERT_TOKENS]
  path.write_text('\n'.join(BERT_TOKENS + extra) + '\n', encoding='utf-8')
  return str(path)


def dialog(personality, turns):
  """A dialog whose utterance j has history turns[:j] and gold reply turns[j] (last candidate)."""
  return {'personality': personality,
          'utterances': [{'history': turns[:j], 'candidates': ['distractor', turns[j]]}
                         for j in range(len(turns))]}


TINY_PERSONACHAT = {
    'train': [dialog(['hello'], ['world', 'hello world']),
              dialog(['or world', 'hell'], ['hello']),
              dialog(['hello'], ['o'])],
    'valid': [dialog(['world'], ['hello', 'hell'])],
}


def write_personachat(directory, content=None) -> str:
  path = directory / 'personachat_self_original.json'
  path.write_text(json.dumps(TINY_PERSONACHAT if content is None else content), encoding='utf-8')
  return str(path)


def random_tensors(shapes: dict, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  return {k: (rng.normal(size=s) * 0.3).astype(np.float32) for k, s in shapes.items()}


def hf_gguf_tokenizer(gguf_path):
  """An independent reference for `tokenizers.from_gguf` on SmolLM2's GGUF: Hugging Face
  `tokenizers` byte-level BPE built from the file's tokens and merges, with the smollm
  pre-tokenizer (single digits, then GPT-2's byte-level regex)."""
  import tokenizers as tk
  from fedjax_intrinsic.models import gguf_checkpoint
  meta = gguf_checkpoint.read_metadata(gguf_path)
  t = tk.Tokenizer(tk.models.BPE(
      vocab={s: i for i, s in enumerate(meta['tokenizer.ggml.tokens'])},
      merges=[tuple(m.split(' ')) for m in meta['tokenizer.ggml.merges']]))
  t.pre_tokenizer = tk.pre_tokenizers.Sequence([
      tk.pre_tokenizers.Digits(individual_digits=True),
      tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  return t
