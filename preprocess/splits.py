"""Deterministic train/val/test assignment by a hash of a name.

Used by every reader whose source has no official split, so that one image lands in the
same split on every machine and every run, and adding images never moves old ones.
"""

import hashlib

SPLITS = ('train', 'val', 'test')


def split_by_hash(name: str, val_fraction: float = 0.1, test_fraction: float = 0.0) -> str:
    """Returns 'test', 'val' or 'train' for ``name`` (e.g. a relative image path).

    The first 8 bytes of sha1(name as UTF-8, with '\\' turned into '/') give a number u in
    [0, 1); u < test_fraction -> 'test', u < test_fraction + val_fraction -> 'val', else
    'train'.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction > 1:
        raise ValueError(f'bad fractions: val={val_fraction}, test={test_fraction}')
    digest = hashlib.sha1(name.replace('\\', '/').encode('utf-8')).digest()
    u = int.from_bytes(digest[:8], 'big') / 2.0**64
    if u < test_fraction:
        return 'test'
    if u < test_fraction + val_fraction:
        return 'val'
    return 'train'
