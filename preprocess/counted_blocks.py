"""Parser for the "name / count / one row per face" text layout of WIDER FACE and FDDB.

Layout, one block per image::

    <name>                 one token that is not a number (a relative path)
    <count>                an integer >= 0
    <row> x count          ``num_fields`` numbers each

WIDER writes one extra all-zero row after a count of 0 (``zero_placeholder=True``).

Malformed blocks are not raised: they come out as ``SkipItem('malformed_annotation',
'file:line: problem: text')`` and parsing resynchronizes at the next line that looks like
a name (one non-numeric token). A count that disagrees with the rows that follow (fewer
rows before the next name, or extra numeric rows after them) skips that image only: the
image is never yielded with a partial face list, since its missing faces would be taught
as background.
"""

from typing import Iterator, List, Tuple, Union

import numpy as np

from preprocess import files
from preprocess.items import SkipItem

MALFORMED = 'malformed_annotation'
Block = Tuple[str, np.ndarray, int]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_name(text: str) -> bool:
    tokens = text.split()
    return len(tokens) == 1 and not _is_number(tokens[0])


def _parse_row(text: str, num_fields: int):
    """Returns (values [num_fields] float64, None) or (None, problem)."""
    tokens = text.split()
    if len(tokens) != num_fields:
        return None, f'expected {num_fields} fields, got {len(tokens)}'
    try:
        values = np.array([float(t) for t in tokens], np.float64)
    except ValueError:
        return None, 'non-numeric field'
    if not np.all(np.isfinite(values)):
        return None, 'non-finite field'
    return values, None


def parse_counted_blocks(path: str, num_fields: int,
                         zero_placeholder: bool = False) -> Iterator[Union[Block, SkipItem]]:
    """Yields (name, rows [N, num_fields] float64, line_no of the name) or SkipItem.

    Line numbers are 1-based. Blank lines are ignored. Blocks come out in file order.
    """
    with files.open_text(path) as f:
        lines: List[Tuple[int, str]] = [(i + 1, t.strip()) for i, t in enumerate(f)]
    lines = [(n, t) for n, t in lines if t]
    i = 0

    def skip(line_no, problem, text):
        return SkipItem(MALFORMED, f'{path}:{line_no}: {problem}: {text!r}')

    def next_name(j):
        while j < len(lines) and not _is_name(lines[j][1]):
            j += 1
        return j

    while i < len(lines):
        name_line, name = lines[i]
        if not _is_name(name):
            yield skip(name_line, 'expected an image name', name)
            i = next_name(i + 1)
            continue
        i += 1
        if i >= len(lines):
            yield skip(name_line, 'no face count after the image name', name)
            break
        count_line, count_text = lines[i]
        try:
            count = int(count_text)
        except ValueError:
            count = -1
        if count < 0:
            yield skip(count_line, f'bad face count for {name}', count_text)
            i = next_name(i)
            continue
        i += 1
        rows, problem = [], None
        for k in range(count):
            if i >= len(lines) or _is_name(lines[i][1]):
                problem = (count_line, f'count {count} for {name} but only {k} face rows',
                           count_text)
                break
            values, why = _parse_row(lines[i][1], num_fields)
            if values is None:
                problem = (lines[i][0], f'{why} in face row of {name}', lines[i][1])
                break
            rows.append(values)
            i += 1
        if problem is None and count == 0 and zero_placeholder and i < len(lines):
            values, _ = _parse_row(lines[i][1], num_fields)
            if values is not None and not values.any():
                i += 1
        if problem is None and i < len(lines) and not _is_name(lines[i][1]):
            problem = (lines[i][0], f'count {count} for {name} but more rows follow',
                       lines[i][1])
        if problem is not None:
            yield skip(*problem)
            i = next_name(i)
            continue
        yield name, np.array(rows, np.float64).reshape(-1, num_fields), name_line
