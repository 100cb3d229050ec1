"""`uncompressed`: every client sends its full gradient; FetchSGD's "uncompressed" row.

Up:   the gradient of the client's masked mean loss at the broadcast θ on its whole local batch,
      a pytree shaped like θ: D float32 (4·D bytes); with `method.quantize` bf16 (2·D) or int8
      (D + 4 per leaf: int8 values and one float32 scale per leaf).
Down: θ itself, D float32, to every participant (it changes in every coordinate every round).
State: server θ: f32[D] and the server optimiser's state (`servers.dense`); no client state, or
       the error memory f32[D] per client with `method.error_feedback` (with a quantiser).
The client message is linear in one gradient, so the cohort shortcut applies (float32 only).
Recipe: trainer `recipe.gradient`, compressor identity (+ quantiser, + error feedback),
server `servers.dense`.
"""
from fedjax_intrinsic.algorithms import base, options, recipe, servers
from fedjax_intrinsic.fields import ConfigError


FIELDS = {**options.QUANTIZE, **options.ERROR_FEEDBACK}


def validate(config) -> None:
  """One gradient on the client's whole local data: client.local_steps must be 1."""
  options.validate(config)
  if config.client.local_steps != 1:
    raise ConfigError(f'client.local_steps={config.client.local_steps} is invalid for '
                      f'method.name={config.method.name!r}; allowed: 1 (use method.name=fedavg '
                      'for several local steps)')


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  flat = servers.flat_setup(ctx.params0)
  return recipe.assemble('uncompressed', recipe.gradient(ctx, flat),
                         options.dense(method_config, ctx.params0),
                         servers.dense(ctx.server_optimizer, flat))
