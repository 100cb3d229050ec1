"""Command-line plumbing shared by run.py and the benchmarks: bad input is one line and exit 2.

    if __name__ == '__main__':
      app.run(main, flags_parser=cli.flags_parser('config'))   # then, in main:
      config = cli.config(default_spec)                          # ConfigError -> one line, exit 2

`--config=path[:arg]` and `--config.a.b=value` are taken out of argv before absl parses the rest
(absl would parse the config file while parsing flags, where a bad value escapes as a traceback):
`preflight.load_config` then reads them. A bad absl flag (unknown, or a value of the wrong type) or a
positional argument is refused the same way: `error: <one line>` on stderr, exit code 2. Logs: absl's INFO lines (JAX's
TPU probe, orbax's progress) are hidden unless --verbosity is given; warnings still show.
"""
import re
import sys
from typing import NoReturn, Optional

from absl import flags, logging

USAGE_EXIT = 2
_parsed: dict = {}


def refuse(message: str) -> NoReturn:
  """Prints `error: <first line of message>` on stderr and exits with code 2."""
  line = (str(message).strip().splitlines() or ['bad input'])[0]
  print(f'error: {line}', file=sys.stderr, flush=True)
  sys.exit(USAGE_EXIT)


def split_config_args(argv: list[str], name: str = 'config'):
  """(rest, spec or None, [(dotted field, text), ...]): the `--name...` arguments taken out of
  argv (both `--name=v` and `--name v` forms; a bare `--name.a.b` before another flag is true)."""
  pattern = re.compile(r'^--?' + re.escape(name) + r'(\.[^=]*)?(?:(=)(.*))?$', re.S)
  rest, spec, overrides = argv[:1], None, []
  i = 1
  while i < len(argv):
    arg = argv[i]
    if arg == '--':
      rest += argv[i:]
      break
    m = pattern.match(arg)
    if not m:
      rest.append(arg)
      i += 1
      continue
    field, eq, value = m.group(1), m.group(2), m.group(3)
    if eq is None:
      if i + 1 < len(argv) and not argv[i + 1].startswith('-'):
        value = argv[i + 1]
        i += 1
      elif field:
        value = 'true'
      else:
        refuse(f'--{name} needs a value; allowed: --{name}=path/to/config.py[:key=value,...]')
    if field:
      overrides.append((field[1:], value))
    else:
      spec = value
    i += 1
  return rest, spec, overrides


def flags_parser(name: Optional[str] = 'config'):
  """An absl `flags_parser` for app.run: takes out the config arguments (`name`; None: none), parses
  the other flags, and refuses a bad flag or any positional argument in one line (exit 2)."""
  def parse(argv):
    rest, spec, overrides = (split_config_args(argv, name) if name else (argv, None, []))
    try:
      args = flags.FLAGS(rest)
    except flags.Error as e:
      refuse(e)
    if len(args) > 1:
      refuse(f'unexpected arguments {args[1:]}; allowed: --flag=value arguments only')
    _parsed.update(spec=spec, overrides=overrides, name=name)
    return args
  return parse


def quiet_logs() -> None:
  """absl/python logging at WARNING unless --verbosity (-v) was given on the command line."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def config(default_spec: Optional[str] = None):
  """The config of the command line (`flags_parser` ran): the file and its overrides, loaded and
  parsed by `preflight.load_config`; any error in them is refused in one line (exit 2)."""
  from fedjax_intrinsic import config as config_lib, preflight
  name = _parsed.get('name') or 'config'
  spec = _parsed.get('spec')
  spec = default_spec if spec is None else spec
  if spec is None:
    refuse(f'--{name} is required; allowed: --{name}=path/to/config.py[:key=value,...]')
  try:
    return preflight.load_config(spec, _parsed.get('overrides', []), field=f'--{name}')
  except config_lib.ConfigError as e:
    refuse(e)


def spec() -> Optional[str]:
  """The --config value given on the command line (None when absent)."""
  return _parsed.get('spec')
