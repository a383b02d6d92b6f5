r"""The repository's URL: set once in setup.cfg, copied to where it must be spelled out.

  python -m experiments.repo_url                                   # print it, check copies
  python -m experiments.repo_url https://github.com/OWNER/cgml_jax  # set it everywhere

setup.cfg's `url` is the one setting. A notebook opened on Colab has no checkout to read
it from, so its install cell and its Colab badge, and the README's Colab links, carry the
URL as text; this command writes them from setup.cfg and checks that they agree (so does
tests/test_notebook.py). A publisher, or a fork, runs it once with its own URL and commits.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GITHUB = re.compile(r'https://github\.com/([\w.\-]+/[\w.\-]+)')


def read(root: str = ROOT) -> str:
  """setup.cfg's [metadata] url."""
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(root, 'setup.cfg'))
  return cfg['metadata']['url']


def _slug(url: str) -> str:
  m = GITHUB.fullmatch(url.rstrip('/'))
  if not m:
    raise ValueError(f'the repository URL must be https://github.com/OWNER/NAME (Colab opens '
                     f'notebooks from GitHub), got {url!r}')
  return m.group(1)


def files(root: str = ROOT) -> list[str]:
  """The files that spell the URL out: the README and the notebooks."""
  return [os.path.join(root, 'README.md')] + sorted(
      glob.glob(os.path.join(root, 'notebooks', '*.ipynb')))


def _links(text: str) -> set[str]:
  """OWNER/NAME of every GitHub and Colab-on-GitHub link to this project in `text`."""
  found = re.findall(r'colab\.research\.google\.com/github/([\w.\-]+/[\w.\-]+)/blob/', text)
  found += re.findall(r"REPO = 'https://github\.com/([\w.\-]+/[\w.\-]+)'", text)
  return set(found)


def stale(root: str = ROOT) -> dict[str, set[str]]:
  """{file: the other OWNER/NAMEs it links to} for every copy that disagrees with setup.cfg."""
  want = _slug(read(root))
  out = {}
  for path in files(root):
    with open(path) as f:
      other = _links(f.read()) - {want}
    if other:
      out[path] = other
  return out


def write(url: str, root: str = ROOT) -> list[str]:
  """Sets setup.cfg's url and rewrites every copy; returns the files changed."""
  new = _slug(url)
  changed = []
  cfg_path = os.path.join(root, 'setup.cfg')
  with open(cfg_path) as f:
    text = f.read()
  updated, n = re.subn(r'(?m)^url = .*$', f'url = https://github.com/{new}', text)
  if n != 1:
    raise ValueError(f'{cfg_path} must have one `url = ...` line in [metadata], found {n}')
  for path, old_text, new_text in [(cfg_path, text, updated)] + [
      (p, t, _rewrite(t, new)) for p, t in ((p, open(p).read()) for p in files(root))]:
    if new_text != old_text:
      with open(path, 'w') as f:
        f.write(new_text)
      changed.append(path)
  return changed


def _rewrite(text: str, new: str) -> str:
  text = re.sub(r'(colab\.research\.google\.com/github/)[\w.\-]+/[\w.\-]+(/blob/)',
                rf'\g<1>{new}\g<2>', text)
  return re.sub(r"(REPO = 'https://github\.com/)[\w.\-]+/[\w.\-]+(')", rf'\g<1>{new}\g<2>',
                text)


def main(argv: list[str]) -> int:
  try:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith('-')):
      raise ValueError('usage: python -m experiments.repo_url [https://github.com/OWNER/NAME]')
    if len(argv) == 2:
      for path in write(argv[1]):
        print(f'wrote {os.path.relpath(path, ROOT)}')
    print(read())
    bad = stale()
    for path, other in bad.items():
      print(f'error: {os.path.relpath(path, ROOT)} links to {sorted(other)}, not setup.cfg\'s '
            f'url; run python -m experiments.repo_url {read()}', file=sys.stderr)
    return 1 if bad else 0
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main(sys.argv))
