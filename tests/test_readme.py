"""The front page cannot go stale: README.md's Python example runs as printed, its two commands are
the ones CI runs (.ci/run), and every relative link in it resolves."""
import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
MARKER = '<!-- readme-example'
# the two commands of the front page: the project's rules and .ci/run depend on them
SETUP = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
         "pip install -e '.[test]' && scripts/demo.sh")
TESTS = 'python -m pytest -q -n auto'


def readme():
    return README.read_text(encoding='utf-8')


def example():
    """The ```python block right after the marker comment."""
    text = readme()
    assert text.count(MARKER) == 1, 'README.md must mark exactly one Python example'
    after = text[text.index(MARKER):]
    m = re.match(r'<!--.*?-->\s*```python\n(.*?)\n```', after, re.S)
    assert m, 'the marker must sit right above a ```python block'
    return m.group(1)


def test_the_example_runs_as_printed(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    run = subprocess.run([sys.executable, '-c', example()], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 2, run.stdout
    stats = ast.literal_eval(lines[0])
    # the named terms of the two-stage model: its loss, the joint ELBO and each stage's part
    assert {'loss', 'elbo', 'rate', 'distortion', 'nll', 'rate_stage1', 'rate_stage2',
            'mse_stage1'} <= set(stats)
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())
    assert stats['rate'] >= 0 and stats['mse_stage1'] >= 0
    assert stats['elbo'] == pytest.approx(stats['nll'] + stats['rate'], abs=2e-4)
    assert lines[1] == '(4, 16, 16, 1)'
    assert (tmp_path / 'stage1.th').is_file()


def test_the_two_commands_are_the_ones_ci_runs():
    bash = re.search(r'```bash\n(.*?)\n```', readme(), re.S).group(1)
    commands = [line for line in bash.splitlines() if line and not line.startswith('#')]
    assert commands == [SETUP, TESTS]
    ci = (REPO / '.ci' / 'run').read_text()
    for step in SETUP.split(' && ')[:-1]:
        assert step in ci
    assert TESTS in ci


def anchors(path):
    """GitHub's anchors for a Markdown file's headings."""
    out = set()
    for line in path.read_text(encoding='utf-8').splitlines():
        m = re.match(r'#{1,6} (.*)', line)
        if m:
            slug = re.sub(r'[^\w\- ]', '', m.group(1).strip().lower()).replace(' ', '-')
            out.add(slug)
    return out


def test_every_relative_link_resolves():
    links = re.findall(r'\]\(([^)\s]+)\)', readme())
    assert links
    for link in links:
        if re.match(r'[a-z]+://', link):
            continue
        target, _, anchor = link.partition('#')
        path = REPO / target if target else README
        assert path.exists(), f'README.md links to {link}, which does not exist'
        if anchor:
            assert anchor in anchors(path), f'README.md links to {link}: no such heading'
