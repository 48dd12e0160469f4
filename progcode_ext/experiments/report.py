"""What every experiment's report shares: numbers over seeds, the table of convergence checks, and
the two files it writes (results.json for programs, report.md for people)."""
import json
import os

import numpy as np

from .runs import say


def mean_std(values, digits=5):
    """'m ± s' of a list of numbers over seeds, or the number alone for one seed."""
    values = [float(v) for v in values]
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return f'{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}'


def summary(values):
    values = [float(v) for v in values]
    return dict(mean=float(np.mean(values)), std=float(np.std(values, ddof=1)) if len(values) > 1
                else 0.0, values=values)


def table_head(*columns):
    """A markdown table's first two lines: the column titles (an empty one stays empty) and the
    separator, one per column."""
    return ['|' + '|'.join(f' {c} ' if c else ' ' for c in columns) + '|',
            '|' + '---|' * len(columns)]


def check_table(checks):
    """Markdown rows of convergence checks."""
    rows = table_head('model', 'check', 'passed', 'numbers')
    rows += [f"| {c.model} | {c.check} | {'yes' if c.passed else '**no**'} | {c.detail} |"
             for c in checks]
    return rows


def write_results(out, name, results, report_lines):
    """results.json and report.md of one experiment under OUT/NAME/."""
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1,       # (Check, Verdict: their fields; NumPy: float)
                  default=lambda v: v.as_dict() if hasattr(v, 'as_dict') else float(v))
    with open(os.path.join(folder, 'report.md'), 'w') as f:
        f.write('\n'.join(report_lines) + '\n')
    say(f'{name}: report in {os.path.join(folder, "report.md")}')
    return folder
