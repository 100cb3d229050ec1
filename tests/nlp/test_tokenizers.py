"""GPT-2 BPE and BERT WordPiece on tiny vocabularies, with encodings derived by hand."""
import pytest

from fedjax_intrinsic import tokenizers
from tests.nlp.helpers import EOS


def test_bytes_to_unicode_table():
  table = tokenizers.bytes_to_unicode()
  assert len(set(table.values())) == 256
  assert table[ord('a')] == 'a' and table[ord('!')] == '!' and table[0xE9] == 'é'
  # Non-printable bytes map to U+0100 + (their rank among non-printable bytes): 0..32 are the first.
  assert table[0x20] == 'Ġ' and table[0x0A] == 'Ċ' and table[0] == 'Ā'
  assert table[0x7F] == chr(256 + 33) and table[0xAD] == chr(256 + 67)   # last of the 68


def test_gpt2_pretokenize():
  text = "Hello world's  test\n\n 123abc!! I'm\t"
  assert tokenizers.gpt2_pretokenize(text) == [
      'Hello', ' world', "'s", ' ', ' test', '\n\n', ' 123', 'abc', '!!', ' I', "'m", '\t']
  assert tokenizers.gpt2_pretokenize(' a  ') == [' a', '  ']
  assert tokenizers.gpt2_pretokenize('x\u00a0y²') == ['x', '\u00a0', 'y', '²']
  assert tokenizers.gpt2_pretokenize('') == []


def test_gpt2_bpe_known_encodings(gpt2_files):
  tok = tokenizers.gpt2(*gpt2_files)
  assert tok.vocab_size == 263 and tok.special_ids == {'eos': EOS}
  # 'hello': h e l l o -> (l,l) rank 0 -> (h,e) rank 1 -> (he,ll) rank 3 -> hell o.
  # ' world': Ġ w o r l d -> (Ġ,w) 2 -> (o,r) 4 -> (Ġw,or) 5 -> Ġwor l d.
  assert tok.tokenize('hello world') == ['hell', 'o', 'Ġwor', 'l', 'd']
  assert tok.encode('hello world') == [259, ord('o'), 261, ord('l'), ord('d')]
  # 'world' without its space: w o r l d -> (o,r) -> w or l d ((w,or) is not a merge).
  assert tok.encode('world') == [ord('w'), 260, ord('l'), ord('d')]
  assert tok.encode('lll') == [256, ord('l')]                   # leftmost pair merges first
  assert tok.encode('é') == [0xC3, 0xA9]                        # its two UTF-8 bytes
  for text in ('hello world', 'Ünïcödé — 中文\n\ttabs  ', "it's 42!"):
    assert tok.decode(tok.encode(text)) == text
  assert tok.decode(tok.encode('hello') + [EOS]) == 'hello<|endoftext|>'
  assert tok.encode('<|endoftext|>') != [EOS]                   # text is never a special token


def test_bert_wordpiece_known_encodings(bert_vocab):
  tok = tokenizers.bert(bert_vocab)
  assert tok.special_ids == {'unk': 1, 'sep': 3, 'pad': 0, 'cls': 2, 'mask': 4}
  assert tok.tokenize('UnAffable, the Café!') == ['un', '##aff', '##able', ',', 'the', 'cafe', '!']
  assert tok.encode('UnAffable, the Café!') == [5, 6, 7, 10, 8, 9, 11]
  assert tok.tokenize('running') == ['runn', '##ing']            # longest prefix first, not 'run'
  assert tok.tokenize('ab abx xyz') == ['a', '##b', '[UNK]', '[UNK]']   # no full cover -> [UNK]
  assert tok.tokenize('the\x00 cafe\u200b\ufffd [CLS]') == ['the', 'cafe', '[CLS]']
  assert tok.tokenize('中文') == ['[UNK]', '[UNK]']                # CJK: one word per character
  assert tok.tokenize('a' * 101) == ['[UNK]']                     # longer than 100 characters
  assert tokenizers.bert_basic_tokenize('Café!', do_lower_case=False) == ['Café', '!']
  assert tok.decode([5, 6, 7, 8]) == 'unaffable the'
  ids, cut = tokenizers.bert_classification_ids(tok, 'the cafe!', 6)
  assert ids == [2, 8, 9, 11, 3, 0] and not cut
  ids, cut = tokenizers.bert_classification_ids(tok, 'the cafe!', 4)
  assert ids == [2, 8, 9, 3] and cut


def test_missing_files_are_clear_errors(tmp_path, gpt2_files):
  cases = [
      (lambda: tokenizers.gpt2('', gpt2_files[1]), "vocab_file='' is empty", 'vocab.json'),
      (lambda: tokenizers.gpt2(gpt2_files[0], str(tmp_path / 'no.txt')), 'does not exist',
       'openai-community/gpt2/resolve/main/merges.txt'),
      (lambda: tokenizers.bert(str(tmp_path / 'no.txt')), 'does not exist',
       'bert-base-uncased/resolve/main/vocab.txt'),
  ]
  for call, what, where in cases:
    with pytest.raises(ValueError) as info:
      call()
    assert what in str(info.value) and where in str(info.value) and '\n' not in str(info.value)
  bad = tmp_path / 'bad.txt'
  bad.write_text('[PAD]\nthe\n')
  with pytest.raises(ValueError, match=r'lacks \[UNK\], \[SEP\], \[CLS\]'):
    tokenizers.bert(str(bad))
  bad.write_text('#version: 0.2\na b c\n')
  with pytest.raises(ValueError, match='line 2'):
    tokenizers.gpt2(gpt2_files[0], str(bad))
