"""Loading Look-alike data files into contiguous NumPy arrays, checked against the schema.

A data file is a pickled pandas DataFrame with the columns of ``schema.ALL_COLUMNS``.
Each file is read once and turned into a ``Columns`` of integer matrices; readers
then slice arrays by row index and never touch the DataFrame again.
"""
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

import schema


class DataError(ValueError):
    """A data file that does not match the schema; the message names file and column."""


@dataclass
class Columns:
    label: np.ndarray      # N, float32 in {0, 1}
    aid: np.ndarray        # N, int64
    static: np.ndarray     # N x 7, int64
    sequence: np.ndarray   # N x 50, int64, fields side by side
    lengths: np.ndarray    # N x 7, int64
    ad: np.ndarray         # N x 6, int64
    row_id: np.ndarray     # N, int64: the source DataFrame's index

    def __len__(self):
        return len(self.label)

    def features(self, rows):
        """The network's four inputs for the given rows."""
        return [self.static[rows], self.sequence[rows], self.lengths[rows], self.ad[rows]]

    def campaigns(self):
        """Sorted aids and, for each, the indices of its rows (in file order)."""
        order = np.argsort(self.aid, kind="stable")
        aids, starts = np.unique(self.aid[order], return_index=True)
        return aids, np.split(order, starts[1:])

    @staticmethod
    def concat(parts):
        return Columns(*[np.concatenate([getattr(p, f) for p in parts])
                         for f in Columns.__dataclass_fields__])


def load_columns(path, max_idxs=schema.DEFAULT_MAX_IDXS):
    """Read one data file; ids are checked against ``max_idxs`` (the model's tables)."""
    frame = _read_frame(path)
    missing = [c for c in schema.ALL_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError("%s: missing column(s) %s; a data file needs the columns %s"
                        % (path, missing, schema.ALL_COLUMNS))
    static_max, sequence_max, ad_max = max_idxs

    label = _integers(frame, schema.LABEL, path)
    if not np.isin(label, (0, 1)).all():
        raise DataError("%s: column 'label' must hold only 0 and 1, found %s"
                        % (path, sorted(set(np.unique(label)) - {0, 1})[:5]))
    static = _id_matrix(frame, schema.STATIC_COLUMNS, static_max, path)
    ad = _id_matrix(frame, schema.AD_COLUMNS, ad_max, path)
    lengths = np.stack([_integers(frame, c, path) for c in schema.LENGTH_COLUMNS], axis=1)
    for i, field in enumerate(schema.SEQUENCE_FIELDS):
        bad = (lengths[:, i] < 0) | (lengths[:, i] > field.width)
        if bad.any():
            raise DataError("%s: column '%s' must lie in [0, %d], found %d at row %s"
                            % (path, field.length_column, field.width,
                               lengths[bad][0, i], frame.index[np.argmax(bad)]))
    sequence = np.concatenate(
        [_sequence_cells(frame, field, m, path)
         for field, m in zip(schema.SEQUENCE_FIELDS, sequence_max)], axis=1)
    return Columns(label=label.astype(np.float32), aid=_integers(frame, schema.AID, path),
                   static=static, sequence=sequence, lengths=lengths, ad=ad,
                   row_id=np.asarray(frame.index, dtype=np.int64))


def _read_frame(path):
    if not os.path.isfile(path):
        raise DataError("%s: no such data file" % path)
    try:
        # read_pickle, unlike pickle.load, also reads frames pickled by pandas < 2.
        frame = pd.read_pickle(path)
    except Exception as error:
        raise DataError("%s: not a readable pickled DataFrame (%s: %s)"
                        % (path, type(error).__name__, error)) from None
    if not isinstance(frame, pd.DataFrame):
        raise DataError("%s: holds a %s, expected a pandas DataFrame"
                        % (path, type(frame).__name__))
    return frame


def _integers(frame, column, path):
    values = frame[column].to_numpy()
    if values.dtype.kind not in "iu":
        raise DataError("%s: column '%s' must hold integers, found dtype %s"
                        % (path, column, values.dtype))
    return values.astype(np.int64, copy=False)


def _check_ids(ids, column, max_id, path, frame):
    bad = (ids < 0) | (ids > max_id)
    if bad.any():
        row = np.argmax(bad.reshape(len(ids), -1).any(axis=1))
        raise DataError("%s: column '%s' has id %d at row %s; ids must lie in [0, %d] "
                        "(hyper_parameters.max_idxs)"
                        % (path, column, ids[bad][0], frame.index[row], max_id))


def _id_matrix(frame, columns, max_ids, path):
    matrix = np.stack([_integers(frame, c, path) for c in columns], axis=1)
    for i, (column, max_id) in enumerate(zip(columns, max_ids)):
        _check_ids(matrix[:, i], column, max_id, path, frame)
    return matrix


def _sequence_cells(frame, field, max_id, path):
    cells = frame[field.name].to_numpy()
    try:
        matrix = np.stack(cells) if len(cells) else np.zeros((0, field.width), np.int64)
    except ValueError:
        widths = sorted({np.shape(c) for c in cells}, key=str)
        raise DataError("%s: column '%s' must hold integer arrays of width %d, found shapes %s"
                        % (path, field.name, field.width, widths[:5])) from None
    if matrix.shape[1:] != (field.width,) or matrix.dtype.kind not in "iu":
        raise DataError("%s: column '%s' must hold integer arrays of width %d, found %s of %s"
                        % (path, field.name, field.width, matrix.shape[1:], matrix.dtype))
    matrix = matrix.astype(np.int64, copy=False)
    _check_ids(matrix, field.name, max_id, path, frame)
    return matrix
