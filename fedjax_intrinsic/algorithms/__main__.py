"""Prints docs/methods.md, the methods' fields table, from their declarations:

    python -m fedjax_intrinsic.algorithms > docs/methods.md
"""
from fedjax_intrinsic import algorithms

if __name__ == '__main__':
  print(algorithms.methods_markdown(), end='')
