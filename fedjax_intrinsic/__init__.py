"""fedjax-intrinsic: a JAX harness for communication-efficient federated learning."""
