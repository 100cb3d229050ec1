"""`fedavg`: Federated Averaging (McMahan et al. 2017) with a server optimiser (Reddi et al. 2021).

Each client runs `local_steps` steps of SGD at `client_lr` (the batches of one or more local epochs,
see the config's client settings) from the broadcast θ and sends Δ = θ_start − θ_end.
Up:   Δ, a pytree shaped like θ: D float32.
Down: θ, D float32, to every participant.
State: server θ and optimiser state (θ-space); no client state. With one local step and
client_lr = 1, Δ is the gradient and FedAvg equals `uncompressed` (docs/paper.md §2).
"""
from fedjax_intrinsic.algorithms import base
from fedjax_intrinsic.algorithms.uncompressed import ServerState, build as _build_uncompressed


def build(method_config, ctx: base.BuildContext) -> base.FederatedAlgorithm:
  del method_config
  loss = base.model_loss(ctx.model)
  lr = ctx.client_lr

  def client_update(bc, cstate, batches, key):
    del key
    end, metrics = base.local_sgd(loss, bc, batches, lr)
    return base.tree_sub(bc, end), cstate, metrics

  return _build_uncompressed(None, ctx)._replace(
      name='fedavg', client_update=client_update, cohort_shortcut=False)


__all__ = ['ServerState', 'build']
