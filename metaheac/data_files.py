"""Loading Look-alike data files into contiguous NumPy arrays, checked against the schema.

A data file is either a pickled pandas DataFrame (``.pkl``) with the columns of
``schema.ALL_COLUMNS`` (and optionally ``schema.UID``) or the same data in columnar
form (``.npz``, written by ``tools/convert_data.py``), which needs no pickle to read.
A pickle is read once, with an unpickler that only admits what such a DataFrame
needs, and its arrays are cached in ``.columns_cache/`` beside it, keyed by the
file's size and modification time. Readers slice the arrays by row index and never
touch a DataFrame again.

A columnar file can also be read in row chunks without loading its arrays
(``open_rows``): its members are stored uncompressed, so each chunk is read through
a short-lived memory map of just the rows it needs. ``expand.py`` scores a pool of
any size that way.
"""
import io
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import pandas as pd
from pandas.compat import pickle_compat

from metaheac import schema
from metaheac.atomic_files import replacing

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".pkl", ".npz")
CACHE_DIR = ".columns_cache"
# Bump when the columnar layout changes, so old caches are rebuilt.
# 2: an optional uid array; label may be absent (a seed or pool file without labels).
FORMAT_VERSION = 2


class DataError(ValueError):
    """A data file that does not match the schema; the message names file and column."""


@dataclass
class Columns:
    label: Optional[np.ndarray]  # N, float32 in {0, 1}; None: the file has no label column
    aid: np.ndarray        # N, int64
    static: np.ndarray     # N x 7, int64
    sequence: np.ndarray   # N x 50, int64, fields side by side
    lengths: np.ndarray    # N x 7, int64
    ad: np.ndarray         # N x 6, int64
    row_id: np.ndarray     # N, int64: the source DataFrame's index
    uid: Optional[np.ndarray] = None  # N, int64; None: the file has no uid column

    def __len__(self):
        return len(self.aid)

    def features(self, rows):
        """The network's four inputs for the given rows."""
        return [self.static[rows], self.sequence[rows], self.lengths[rows], self.ad[rows]]

    def user_ids(self):
        """The uid column, or where the file has none, the DataFrame index."""
        return self.row_id if self.uid is None else self.uid

    def take(self, rows):
        """The given rows, as Columns (the interface of RowReader.take)."""
        return Columns(**{name: None if value is None else value[rows]
                          for name, value in _arrays(self).items()})

    def campaigns(self):
        """Sorted aids and, for each, the indices of its rows (in file order)."""
        return campaign_rows(self.aid)

    @staticmethod
    def concat(parts):
        if len(parts) == 1:  # no copy: a copy doubles the peak memory of a full-preset load
            return parts[0]
        joined = {}
        for name in _arrays(parts[0]):
            values = [getattr(p, name) for p in parts]
            joined[name] = (None if any(v is None for v in values) else np.concatenate(values))
        return Columns(**joined)


def campaign_rows(aid):
    """Sorted aids and, for each, the indices of its rows in `aid` (in file order)."""
    order = np.argsort(aid, kind="stable")
    aids, starts = np.unique(aid[order], return_index=True)
    return aids, np.split(order, starts[1:])


def _arrays(columns):
    return {f.name: getattr(columns, f.name) for f in fields(Columns)}


# Arrays every columnar file holds; label and uid are optional.
REQUIRED_ARRAYS = [f.name for f in fields(Columns) if f.name not in (schema.LABEL, schema.UID)]


def data_file_stem(path):
    """`path` without its data suffix, or None if it is not a data file."""
    for suffix in DATA_SUFFIXES:
        if path.endswith(suffix):
            return path[:-len(suffix)]
    return None


def load_columns(path, max_idxs=schema.DEFAULT_MAX_IDXS, use_cache=True, require_label=True):
    """Read one data file; ids are checked against ``max_idxs`` (the model's tables).

    With ``require_label=False`` a file without a label column loads with label None."""
    if not os.path.isfile(path):
        raise DataError("%s: no such data file" % path)
    if path.endswith(".npz"):
        columns = _read_columnar(path)
    elif use_cache:
        columns = _cached(path)
    else:
        columns = frame_to_columns(read_frame(path), path)
    _check_label_present(columns.label, require_label, path)
    check_values(columns, max_idxs, path)
    if columns.label is not None:
        columns.label = columns.label.astype(np.float32, copy=False)
    return columns


def _check_label_present(label, require_label, path):
    if label is None and require_label:
        raise DataError("%s: missing column(s) ['%s']; a data file needs the columns %s"
                        % (path, schema.LABEL, schema.ALL_COLUMNS))


def open_rows(path, require_label=True):
    """A RowReader of a data file, for reading it in row chunks.

    A ``.npz`` streams; a ``.pkl`` is parsed once into its cache, which then streams
    (if the cache cannot be written, the file is held in memory). Ids are not checked
    here: check each chunk with ``check_values``."""
    if not os.path.isfile(path):
        raise DataError("%s: no such data file" % path)
    if path.endswith(".npz"):
        reader = RowReader(path)
    else:
        cache = _cached(path, return_path=True)
        reader = RowReader(cache) if isinstance(cache, str) else cache
    _check_label_present(reader.label, require_label, path)
    return reader


class RowReader:
    """The rows of an uncompressed columnar file, read a chunk at a time.

    ``aid``, ``label``, ``uid`` and ``row_id`` (a few bytes per row) are held in memory;
    ``take(rows)`` reads the other arrays' given rows through a memory map that is closed
    again, so the pages read do not stay in the process."""

    def __init__(self, path):
        self.path = path
        self._members = {}
        try:
            with zipfile.ZipFile(path) as archive, open(path, "rb") as file:
                for info in archive.infolist():
                    self._members[info.filename[:-len(".npy")]] = _member_layout(
                        archive, info, file, path)
        except (OSError, zipfile.BadZipFile, ValueError) as error:
            if isinstance(error, DataError):
                raise
            raise DataError("%s: not a readable columnar .npz file (%s)" % (path, error)) from None
        missing = [name for name in REQUIRED_ARRAYS if name not in self._members]
        if missing:
            raise DataError("%s: columnar file lacks array(s) %s" % (path, missing))
        self.aid = self._whole("aid")
        self.row_id = self._whole("row_id")
        self.label = self._whole(schema.LABEL) if schema.LABEL in self._members else None
        self.uid = self._whole(schema.UID) if schema.UID in self._members else None
        if self.label is not None:
            self.label = self.label.astype(np.float32, copy=False)

    def __len__(self):
        return len(self.aid)

    user_ids = Columns.user_ids  # the same uid and row_id arrays

    def _whole(self, name):
        return self._read(name, slice(None))

    def _read(self, name, rows):
        offset, dtype, shape = self._members[name]
        if not shape[0]:
            return np.zeros(shape, dtype)
        # A map per read, dropped at return: unmapped, the pages read leave this process.
        mapped = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)
        return np.array(mapped[rows])

    def take(self, rows):
        """Columns of the given rows (sorted row indices read fastest)."""
        rows = np.asarray(rows)
        read = {name: self._read(name, rows) for name in ("static", "sequence", "lengths", "ad")}
        return Columns(label=None if self.label is None else self.label[rows], aid=self.aid[rows],
                       row_id=self.row_id[rows], uid=None if self.uid is None else self.uid[rows],
                       **read)


def _member_layout(archive, info, file, path):
    """(offset, dtype, shape) of an uncompressed .npy member's data within the .npz."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise DataError("%s: member %s is compressed; write the file with tools/convert_data.py "
                        "(np.savez, not np.savez_compressed) to read it in chunks"
                        % (path, info.filename))
    file.seek(info.header_offset)
    local_header = file.read(30)
    name_length, extra_length = np.frombuffer(local_header[26:30], "<u2")
    file.seek(info.header_offset + 30 + int(name_length) + int(extra_length))
    version = np.lib.format.read_magic(file)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
        version, np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(file)
    if fortran or dtype.hasobject:
        raise DataError("%s: member %s is not a plain C-ordered array" % (path, info.filename))
    return file.tell(), dtype, shape


def select_data_files(paths):
    """The data files among `paths`, sorted; one file per name, .pkl or .npz."""
    chosen = sorted(p for p in paths if data_file_stem(p) and os.path.isfile(p))
    stems = [data_file_stem(p) for p in chosen]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise DataError("both %s.pkl and %s.npz are present: the rows would be read twice; "
                        "keep one of them" % (twins[0], twins[0]))
    return chosen


def save_columnar(columns, path, source=None):
    """Write `columns` as an .npz atomically; `source` (size, mtime_ns) keys a cache."""
    arrays = {name: value for name, value in _arrays(columns).items() if value is not None}
    arrays["format_version"] = np.array(FORMAT_VERSION)
    if source is not None:
        arrays["source_key"] = np.array(source, dtype=np.int64)
    with replacing(path) as temporary, open(temporary, "wb") as f:
        np.savez(f, **arrays)


def _source_key(path):
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def _cached(path, return_path=False):
    """The columns of a pickle, from its cache when fresh; with `return_path`, the cache's
    path instead (or the columns, if the cache could not be written)."""
    cache = os.path.join(os.path.dirname(path), CACHE_DIR, os.path.basename(path) + ".npz")
    key = _source_key(path)
    if os.path.isfile(cache):
        with np.load(cache, allow_pickle=False) as stored:
            fresh = ("source_key" in stored and tuple(stored["source_key"]) == key
                     and "format_version" in stored
                     and int(stored["format_version"]) == FORMAT_VERSION)
        if fresh:
            return cache if return_path else _read_columnar(cache)
    columns = frame_to_columns(read_frame(path), path)
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        save_columnar(columns, cache, source=key)
    except OSError as error:
        logger.warning("could not cache %s as arrays (%s); it will be parsed again next time",
                       path, error)
        return columns
    return cache if return_path else columns


def _read_columnar(path):
    try:
        with np.load(path, allow_pickle=False) as stored:
            missing = [name for name in REQUIRED_ARRAYS if name not in stored]
            if missing:
                raise DataError("%s: columnar file lacks array(s) %s" % (path, missing))
            return Columns(**{f.name: stored[f.name] if f.name in stored else None
                              for f in fields(Columns)})
    except (OSError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError("%s: not a readable columnar .npz file (%s)" % (path, error)) from None


# What unpickling a DataFrame of this schema needs, across pandas 1.x to 3.x and
# NumPy 1.x and 2.x; anything else (os.system, eval, ...) is refused.
_ALLOWED_GLOBALS = {
    ("builtins", "slice"), ("builtins", "bytes"), ("builtins", "complex"),
    ("__builtin__", "slice"), ("__builtin__", "bytes"), ("_codecs", "encode"),  # protocol 2
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("pandas", "DataFrame"), ("pandas.core.frame", "DataFrame"),
    ("pandas", "Index"), ("pandas", "RangeIndex"), ("pandas", "StringDtype"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.indexes.base", "_new_Index"), ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
    ("pandas.arrays", "StringArray"), ("pandas.core.arrays.string_", "StringArray"),
    ("pandas.core.arrays.string_", "StringDtype"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # pandas' table of classes that moved between versions (legacy pickles).
        module, name = pickle_compat._class_locations_map.get((module, name), (module, name))
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                "refused to load %s.%s: a data file may only hold a pandas DataFrame of "
                "integer columns and arrays" % (module, name))
        return super().find_class(module, name)


def read_frame(path):
    """The DataFrame pickled in `path`, read without running code the file names."""
    try:
        with open(path, "rb") as f:
            frame = _RestrictedUnpickler(f).load()
    except Exception as error:
        raise DataError("%s: not a readable pickled DataFrame (%s: %s)"
                        % (path, type(error).__name__, error)) from None
    if not isinstance(frame, pd.DataFrame):
        raise DataError("%s: holds a %s, expected a pandas DataFrame"
                        % (path, type(frame).__name__))
    return frame


def frame_to_columns(frame, path):
    """Arrays of the schema's columns; checks presence, types and widths.

    The label and uid columns may be absent (then None); ``load_columns`` decides whether
    a label is required."""
    missing = [c for c in schema.ALL_COLUMNS if c not in frame.columns and c != schema.LABEL]
    if missing:
        raise DataError("%s: missing column(s) %s; a data file needs the columns %s"
                        % (path, missing, schema.ALL_COLUMNS))
    known = schema.ALL_COLUMNS + schema.OPTIONAL_COLUMNS
    extra = [c for c in frame.columns if c not in known]
    if extra:
        logger.warning("%s: ignoring column(s) not in the schema: %s", path, extra)
    integers = lambda column: _integers(frame, column, path)  # noqa: E731
    optional = lambda column: integers(column) if column in frame.columns else None  # noqa: E731
    return Columns(
        label=optional(schema.LABEL),
        uid=optional(schema.UID),
        aid=integers(schema.AID),
        static=np.stack([integers(c) for c in schema.STATIC_COLUMNS], axis=1),
        sequence=np.concatenate([_sequence_cells(frame, f, path)
                                 for f in schema.SEQUENCE_FIELDS], axis=1),
        lengths=np.stack([integers(c) for c in schema.LENGTH_COLUMNS], axis=1),
        ad=np.stack([integers(c) for c in schema.AD_COLUMNS], axis=1),
        row_id=_row_ids(frame, path))


def check_values(columns, max_idxs, path):
    """Labels in {0, 1}, lengths within widths, ids within the model's tables."""
    static_max, sequence_max, ad_max = max_idxs
    label = columns.label
    bad = np.zeros(0, bool) if label is None else (label != 0) & (label != 1)
    if bad.any():
        raise DataError("%s: column 'label' must hold only 0 and 1, found %s at row %s"
                        % (path, _number(label[bad][0]), columns.row_id[np.argmax(bad)]))
    for i, field in enumerate(schema.SEQUENCE_FIELDS):
        _check_range(columns.lengths[:, i], field.length_column, field.width, columns, path,
                     what="length")
    for i, (column, max_id) in enumerate(zip(schema.STATIC_COLUMNS, static_max)):
        _check_range(columns.static[:, i], column, max_id, columns, path)
    for i, (column, max_id) in enumerate(zip(schema.AD_COLUMNS, ad_max)):
        _check_range(columns.ad[:, i], column, max_id, columns, path)
    for field, cols, max_id in zip(schema.SEQUENCE_FIELDS, schema.SEQUENCE_SLICES, sequence_max):
        _check_range(columns.sequence[:, cols], field.name, max_id, columns, path)


def _check_range(values, column, high, columns, path, what="id"):
    bad = (values < 0) | (values > high)
    if bad.any():
        row = np.argmax(bad.reshape(len(values), -1).any(axis=1))
        hint = " (hyper_parameters.max_idxs)" if what == "id" else ""
        raise DataError("%s: column '%s' has %s %s at row %s; %ss must lie in [0, %d]%s"
                        % (path, column, what, values[bad][0], columns.row_id[row], what, high,
                           hint))


def check_unique_uids(aid, uid, path):
    """Each uid at most once within a campaign: an audience lists users by uid."""
    order = np.lexsort((uid, aid))
    twice = np.flatnonzero((aid[order][1:] == aid[order][:-1]) & (uid[order][1:] == uid[order][:-1]))
    if len(twice):
        row = order[twice[0]]
        raise DataError("%s: uid %d appears more than once in campaign aid %d; a uid must be "
                        "unique within a campaign" % (path, uid[row], aid[row]))


def _number(value):
    return int(value) if float(value).is_integer() else float(value)


def _integers(frame, column, path):
    values = frame[column].to_numpy()
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    if values.dtype.kind == "f":
        # Integer columns read back as float after a merge with missing rows.
        missing = np.isnan(values)
        if missing.any():
            raise DataError("%s: column '%s' has a missing value (NaN) at row %s; expected "
                            "integer ids" % (path, column, frame.index[np.argmax(missing)]))
        fractional = values != np.round(values)
        if not fractional.any():
            return values.astype(np.int64)
        raise DataError("%s: column '%s' has the non-integer %s at row %s; expected integer ids"
                        % (path, column, values[fractional][0], frame.index[np.argmax(fractional)]))
    raise DataError("%s: column '%s' must hold integers, found dtype %s"
                    % (path, column, values.dtype))


def _sequence_cells(frame, field, path):
    cells = frame[field.name].to_numpy()
    expected = "integer arrays of width %d" % field.width
    shapes = {np.shape(c) for c in cells[:1000]}
    try:
        matrix = np.stack(cells) if len(cells) else np.zeros((0, field.width), np.int64)
    except (ValueError, TypeError):
        raise DataError("%s: column '%s' must hold %s, found cells of shapes %s"
                        % (path, field.name, expected, sorted(shapes, key=str)[:5])) from None
    if matrix.shape[1:] != (field.width,) or matrix.dtype.kind not in "iu":
        raise DataError("%s: column '%s' must hold %s, found %s cells of %s"
                        % (path, field.name, expected, matrix.shape[1:], matrix.dtype))
    return matrix.astype(np.int64, copy=False)


def _row_ids(frame, path):
    index = np.asarray(frame.index)
    if index.dtype.kind not in "iu":
        raise DataError("%s: the DataFrame index must hold integer row ids, found %s"
                        % (path, index.dtype))
    return index.astype(np.int64, copy=False)


# Writing: the inverse of read_frame, for the generator and the raw preprocessing.
# Files up to this many rows are written by DataFrame.to_pickle; larger ones are streamed
# (see write_frame), since to_pickle holds an array and a memo entry per cell, ~5 KB a row.
TO_PICKLE_MAX_ROWS = 200_000
CELL_BATCH = 65_536  # sequence cells streamed per write


def frame_of(columns, index):
    """DataFrame of schema columns (int64; a sequence cell is a 1-D int64 array), indexed by row id."""
    data = {}
    for name in _written_columns(columns):
        values = columns[name].astype(np.int64)
        if values.ndim == 2:
            values = np.fromiter(iter(values), dtype=object, count=len(values))
        data[name] = values
    return pd.DataFrame(data, index=pd.Index(np.asarray(index, dtype=np.int64)))


def write_frame(path, columns, index, progress=None):
    """Atomically pickle the DataFrame of `columns` (schema column -> values) with row ids `index`.

    Large files are streamed: the pickle calls ``pandas.DataFrame({column: values}, index)`` when
    loaded, and its sequence cells are written a batch at a time, so the frame never exists here.
    Either way ``pandas.read_pickle`` returns the same DataFrame.
    """
    with replacing(path) as temporary, open(temporary, "wb") as file:
        if len(index) <= TO_PICKLE_MAX_ROWS:
            frame_of(columns, index).to_pickle(file, compression=None)
        else:
            _stream_frame_pickle(file, columns, index, progress)


def _stream_frame_pickle(file, columns, index, progress):
    """Write the pickle of write_frame from fragments of one pickler (protocol 3: no framing).

    The pickler runs in fast mode (no memo, so nothing it writes stays referenced), except for
    a first int64 array: its memo entries for numpy's reconstruct function, ndarray and dtype
    then stand for those in every later array. A sequence cell is a template pickled from a
    probe array with the cell's bytes in place of the probe's, ~25 bytes beyond the data.
    """
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=3)

    def fragment(obj, memoize=False):
        buffer.seek(0)
        buffer.truncate()
        pickler.fast = not memoize
        pickler.dump(obj)
        return buffer.getvalue()[2:-1]  # without the PROTO header and the STOP

    file.write(pickle.PROTO + bytes([3]))
    file.write(fragment(np.zeros(1, np.int64), memoize=True) + pickle.POP)
    file.write(fragment(pd.DataFrame) + pickle.EMPTY_DICT + pickle.MARK)
    total = sum(np.shape(columns[name])[0] for name in schema.SEQUENCE_COLUMNS)
    done = 0
    for name in _written_columns(columns):
        values = columns[name]
        file.write(fragment(name))
        if values.ndim == 1:
            file.write(fragment(values.astype(np.int64)))
            continue
        head, tail = _cell_template(values.shape[1], fragment)
        file.write(pickle.EMPTY_LIST)
        for start in range(0, len(values), CELL_BATCH):
            block = values[start:start + CELL_BATCH].astype(np.int64)
            cells = np.empty((len(block), len(head) + block[0].nbytes + len(tail)), np.uint8)
            cells[:, :len(head)] = np.frombuffer(head, np.uint8)
            cells[:, len(head):cells.shape[1] - len(tail)] = block.view(np.uint8)
            cells[:, cells.shape[1] - len(tail):] = np.frombuffer(tail, np.uint8)
            file.write(pickle.MARK + cells.tobytes() + pickle.APPENDS)
            done += len(block)
            if progress:
                progress(done, total)
    index = pd.Index(np.asarray(index, dtype=np.int64))
    file.write(pickle.SETITEMS + fragment(index) + pickle.TUPLE2 + pickle.REDUCE + pickle.STOP)


def _written_columns(columns):
    """The schema's columns, then the optional ones that `columns` holds."""
    return schema.ALL_COLUMNS + [c for c in schema.OPTIONAL_COLUMNS if c in columns]


def _cell_template(width, fragment):
    """The pickled bytes of an int64 array of `width`, split around where its data goes."""
    probe = np.arange(width, dtype=np.int64) + 0x0102030405060708  # bytes found nowhere else
    pickled = fragment(probe)
    assert pickled.count(probe.tobytes()) == 1, "numpy pickles arrays in an unexpected form"
    head, tail = pickled.split(probe.tobytes())
    return head, tail
