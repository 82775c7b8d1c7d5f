"""Turn the raw 2018 Tencent Look-alike competition files into the model's data files.

    python tools/preprocess_raw.py RAW_DIR [--out datasets/Lookalike] [--seed 2021]
                                   [--threshold 4000] [--layout lookalike] [--allow-larger-ids]

RAW_DIR holds the preliminary round's ``adFeature.csv``, ``userFeature.data``, ``train.csv`` and
``test1_truth.csv`` (``tools/generate_data.py --raw`` writes synthetic ones). The output is the
generator's folder layout: ``train_data/train_stage1.pkl``, ``test_hot_data/test_stage{1,2}.pkl``
and ``test_cold_data/test_stage{1,2}.pkl``. It follows the authors' ``data/process.py``:

* Labels -1 become 0. train.csv rows are stage 1 (seed rows), test1_truth.csv rows stage 2
  (candidates). A row's index in its output file is its row number in its source file.
* Half the campaigns (aids), drawn with ``--seed``, are for meta-training: their stage-1 rows
  (their stage-2 rows are not used). The others are test campaigns: hot when they have more
  than T positive rows over both stages (``--threshold``, default 4000 as in PaddleRec's readme;
  the authors' script uses 2000), cold otherwise, including a campaign without positives
  (which the authors' script counts as hot).
* The 7 sequence fields of ``metaheac/schema.py`` keep their first tokens (10/10/10/5/5/5/5, the fields'
  widths), padded after. Each field's tokens are re-indexed densely: the tokens present, in
  increasing raw order, become 0..n-1, and n marks "missing" (padding, an absent field).
  The ``_length`` column counts the tokens kept. The authors' length counts up to 10 tokens
  even for the 5-wide fields; here it never exceeds the width, which the data loader requires.
* The 7 static user fields, the 6 ad fields and the aid are label-encoded: a value becomes its
  rank among the values present, an absent value counting as -1.
* Only users named in train.csv or test1_truth.csv are kept, so the vocabularies are theirs
  (the authors' come from every line of userFeature.data). Unlike the authors' row-by-row
  ``apply``, userFeature.data is parsed a chunk of lines at a time and stored in the smallest
  integer types that hold it, so the real file (11 million users) fits this machine's memory.

Ids: the re-indexed vocabularies differ from the schema's max ids, so the command prints the
``hyper_parameters.max_idxs`` the data needs, as an ``-o`` override for trainer.py and infer.py
(smaller tables than the default). If a field's max id exceeds metaheac/schema.py's, the default tables
cannot hold it: the command then stops before writing anything and names the field, unless
``--allow-larger-ids`` is given, in which case training needs the printed override.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import pandas as pd

import utils  # noqa: E402  (puts the repo root, and so the metaheac package, on the path)

REPO_ROOT = utils.ROOT

from metaheac import schema  # noqa: E402
from metaheac.data_files import write_frame  # noqa: E402
from metaheac.layout import LAYOUTS, RAW_FILES, layout_paths, progress_printer, split_masks, summary  # noqa: E402

LABELLED_COLUMNS = ["aid", "uid", "label"]
MISSING = -1  # a value absent from the raw files, before encoding
CHUNK_BYTES = 64 << 20  # userFeature.data is parsed this much at a time


class RawDataError(ValueError):
    """A raw file that is not as the competition's; the message names the file and what was expected."""


def read_labelled_rows(path, has_header):
    """aid, uid, label (0 / 1) of train.csv (with header) or test1_truth.csv (without)."""
    frame = _read_csv(path, header=0 if has_header else None)
    if not has_header and frame.shape[1] == len(LABELLED_COLUMNS):
        frame.columns = LABELLED_COLUMNS
    if list(frame.columns) != LABELLED_COLUMNS:
        raise RawDataError("%s: expected the columns %s%s, found %s"
                           % (path, ",".join(LABELLED_COLUMNS), "" if has_header else " (no header)",
                              ",".join(map(str, frame.columns))))
    first_line = 2 if has_header else 1
    _require_integers(frame, path, first_line)
    label = frame["label"].to_numpy()
    bad = ~np.isin(label, (1, 0, -1))
    if bad.any():
        raise RawDataError("%s line %d: label %s; expected 1 or -1"
                           % (path, first_line + np.argmax(bad), label[bad][0]))
    frame["label"] = (label == 1).astype(np.int64)
    return frame


def read_ads(path):
    """The ad fields of each aid, indexed by aid; an absent value is MISSING."""
    frame = _read_csv(path, header=0)
    needed = ["aid"] + schema.AD_COLUMNS
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise RawDataError("%s: missing column(s) %s; expected %s" % (path, missing, ",".join(needed)))
    frame = frame[needed].fillna(MISSING)
    _require_integers(frame, path, first_line=2)
    duplicated = frame["aid"].duplicated()
    if duplicated.any():
        raise RawDataError("%s line %d: aid %d is described twice"
                           % (path, 2 + np.argmax(duplicated), frame["aid"][duplicated].iloc[0]))
    return frame.set_index("aid")


def _read_csv(path, **options):
    if not os.path.isfile(path):
        raise RawDataError("%s: no such file" % path)
    try:
        return pd.read_csv(path, **options)
    except (ValueError, pd.errors.ParserError) as error:
        raise RawDataError("%s: not a readable CSV file (%s)" % (path, error)) from None


def _require_integers(frame, path, first_line):
    for column in frame.columns:
        values = frame[column]
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna().to_numpy() | (numbers != numbers.round()).to_numpy()
        if bad.any():
            raise RawDataError("%s line %d: column '%s' holds %r; expected an integer"
                               % (path, first_line + np.argmax(bad), column, values[bad].iloc[0]))
        frame[column] = numbers.astype(np.int64)


@dataclasses.dataclass
class Users:
    """Raw features of users, MISSING where a user lacks a value."""
    uid: np.ndarray  # N
    static: np.ndarray  # N x 7, schema order
    sequences: dict  # field name -> N x width, MISSING after the tokens
    lengths: np.ndarray  # N x 7: tokens kept per sequence field


def read_users(path, wanted_uids, progress=None):
    """The users of userFeature.data whose uid is in the sorted array wanted_uids, sorted by uid."""
    if not os.path.isfile(path):
        raise RawDataError("%s: no such file" % path)
    parts, size, done, line = [], os.path.getsize(path), 0, 1
    with open(path, encoding="utf-8") as file:
        for lines in iter(lambda: file.readlines(CHUNK_BYTES), []):
            chunk = _parse_user_lines(lines, line, path)
            keep = np.isin(chunk.uid, wanted_uids)
            parts.append(Users(chunk.uid[keep], _compact(chunk.static[keep]),
                               {name: _compact(m[keep]) for name, m in chunk.sequences.items()},
                               chunk.lengths[keep]))
            line += len(lines)
            done += sum(map(len, lines))
            if progress:
                progress(min(done, size - 1), size)
    if progress:
        progress(size, size)
    if not parts:
        raise RawDataError("%s: empty file; expected one line per user" % path)
    uid = np.concatenate([p.uid for p in parts])
    order = np.argsort(uid, kind="stable")
    uid = uid[order]
    twice = np.flatnonzero(uid[1:] == uid[:-1])
    if len(twice):
        raise RawDataError("%s: uid %d has more than one line" % (path, uid[twice[0]]))
    gather = lambda arrays: np.concatenate(arrays)[order]  # noqa: E731
    return Users(uid, gather([p.static for p in parts]),
                 {f.name: gather([p.sequences.pop(f.name) for p in parts]) for f in schema.SEQUENCE_FIELDS},
                 gather([p.lengths for p in parts]))


def _parse_user_lines(lines, first_line, path):
    """Users of lines like 'uid 7|age 3|interest1 93 70 77'; fields other than the schema's are skipped."""
    uids, static = [], {name: [] for name in schema.STATIC_COLUMNS}
    tokens = {f.name: [] for f in schema.SEQUENCE_FIELDS}
    counts = {f.name: [] for f in schema.SEQUENCE_FIELDS}
    for number, line in enumerate(lines, first_line):
        try:
            fields = dict(field.split(" ", 1) for field in line.rstrip("\n").split("|"))
            uids.append(fields["uid"])
        except (ValueError, KeyError):
            raise RawDataError("%s line %d: expected 'uid <id>|<field> <values>|...', found %r"
                               % (path, number, line[:80])) from None
        for name in schema.STATIC_COLUMNS:
            static[name].append(fields.get(name, MISSING))
        for f in schema.SEQUENCE_FIELDS:
            kept = fields.get(f.name, "").split(None, f.width)[:f.width]
            tokens[f.name].extend(kept)
            counts[f.name].append(len(kept))

    n = len(lines)
    line_of_row = lambda i: first_line + i  # noqa: E731
    lengths = np.stack([np.array(counts[f.name], dtype=np.uint8) for f in schema.SEQUENCE_FIELDS], axis=1)
    sequences = {}
    for i, f in enumerate(schema.SEQUENCE_FIELDS):
        row_of_token = np.repeat(np.arange(n), lengths[:, i])
        values = _integers(tokens[f.name], path, "field '%s'" % f.name,
                           lambda t: line_of_row(row_of_token[t]))
        if len(values) and values.min() < 0:
            t = np.argmax(values < 0)
            raise RawDataError("%s line %d: field '%s' has the token %d; expected ids >= 0"
                               % (path, line_of_row(row_of_token[t]), f.name, values[t]))
        matrix = np.full((n, f.width), MISSING, dtype=np.int64)
        matrix[np.arange(f.width) < lengths[:, [i]]] = values  # row-major, so tokens stay in order
        sequences[f.name] = matrix
    static_matrix = np.stack([_integers(static[name], path, "field '%s'" % name, line_of_row)
                              for name in schema.STATIC_COLUMNS], axis=1)
    return Users(_integers(uids, path, "field 'uid'", line_of_row), static_matrix, sequences, lengths)


def _integers(strings, path, what, line_of):
    """int64 array of strings; a non-integer is an error naming the line (line_of(position))."""
    try:
        return np.array(strings, dtype=np.int64)
    except (ValueError, OverflowError):
        for position, text in enumerate(strings):
            try:
                np.int64(int(text))
            except (ValueError, OverflowError):
                raise RawDataError("%s line %d: %s holds %r; expected an integer"
                                   % (path, line_of(position), what, text)) from None
        raise


def _compact(values):
    """values in the smallest integer type that holds them (raw ids are mostly small)."""
    if not values.size:
        return values
    return values.astype(np.promote_types(np.min_scalar_type(values.min()), np.min_scalar_type(values.max())))


def _dense_codes(values):
    """Each value's rank among the distinct values; returns (codes, number of distinct values)."""
    vocabulary = np.unique(values)
    return np.searchsorted(vocabulary, values), len(vocabulary)


def _token_codes(matrix):
    """Tokens re-indexed densely in increasing order; MISSING becomes the id after the last token."""
    vocabulary = np.unique(matrix[matrix != MISSING])
    codes = np.searchsorted(vocabulary, matrix)
    codes[matrix == MISSING] = len(vocabulary)
    return codes, len(vocabulary)


@dataclasses.dataclass
class Encoded:
    """The data with every id encoded; rows are train.csv's, then test1_truth.csv's."""
    label: np.ndarray  # per row
    aid: np.ndarray  # per row: the aid's code, 0..number of aids - 1
    uid: np.ndarray  # per row: the raw uid, kept so that an audience names real users
    user_of_row: np.ndarray  # per row: index into the per-user columns
    user_columns: dict  # static, sequence and length columns: per user
    ad_columns: dict  # ad columns: per aid code
    max_idxs: list  # [static, sequence, ad] max ids, as hyper_parameters.max_idxs

    def columns(self, rows):
        """Every schema column of the given rows."""
        users, aids = self.user_of_row[rows], self.aid[rows]
        columns = {schema.LABEL: self.label[rows], schema.AID: aids, schema.UID: self.uid[rows]}
        columns.update({name: values[users] for name, values in self.user_columns.items()})
        columns.update({name: values[aids] for name, values in self.ad_columns.items()})
        return columns


def encode(rows, ads, users):
    """Label-encode aids, static and ad fields and re-index tokens (see the module docstring)."""
    aid, _ = _dense_codes(rows["aid"].to_numpy())
    user_columns, static_max, sequence_max, ad_max = {}, [], [], []
    for i, name in enumerate(schema.STATIC_COLUMNS):
        codes, n = _dense_codes(users.static[:, i])
        user_columns[name] = codes.astype(np.min_scalar_type(n - 1))
        static_max.append(n - 1)
    for i, f in enumerate(schema.SEQUENCE_FIELDS):
        codes, n = _token_codes(users.sequences.pop(f.name))  # pop: frees the raw tokens
        user_columns[f.name] = codes.astype(np.min_scalar_type(n))
        user_columns[f.length_column] = users.lengths[:, i]
        sequence_max.append(n)
    ad_columns = {}
    ad_of_aid = ads.loc[np.unique(rows["aid"].to_numpy())]  # one row per aid code, in code order
    for name in schema.AD_COLUMNS:
        ad_columns[name], n = _dense_codes(ad_of_aid[name].to_numpy())
        ad_max.append(n - 1)
    return Encoded(label=rows["label"].to_numpy(), aid=aid, uid=rows["uid"].to_numpy(),
                   user_of_row=np.searchsorted(users.uid, rows["uid"].to_numpy()),
                   user_columns=user_columns, ad_columns=ad_columns,
                   max_idxs=[static_max, sequence_max, ad_max])


def _check_joins(seeds, candidates, ads, users, paths):
    """Every row's aid is in adFeature.csv and its uid in userFeature.data."""
    for key, frame, first_line in (("seeds", seeds, 2), ("candidates", candidates, 1)):
        no_ad = ~frame["aid"].isin(ads.index).to_numpy()
        if no_ad.any():
            raise RawDataError("%s line %d: aid %d is not in %s"
                               % (paths[key], first_line + np.argmax(no_ad), frame["aid"][no_ad].iloc[0],
                                  paths["ads"]))
        uid = frame["uid"].to_numpy()
        at = np.minimum(np.searchsorted(users.uid, uid), len(users.uid) - 1)
        no_user = users.uid[at] != uid
        if no_user.any():
            raise RawDataError("%s line %d: uid %d has no line in %s"
                               % (paths[key], first_line + np.argmax(no_user), uid[no_user][0],
                                  paths["users"]))


def split_campaigns(aid, label, seed, threshold):
    """Masks over aid codes: meta-train campaigns (half, drawn), hot ones (> threshold positives)."""
    n_aids = aid.max() + 1
    is_train = np.zeros(n_aids, dtype=bool)
    is_train[np.random.default_rng(seed).choice(n_aids, n_aids // 2, replace=False)] = True
    return is_train, np.bincount(aid, weights=label, minlength=n_aids) > threshold


def schema_overflows(max_idxs):
    """'field: max id X > Y' for each field whose ids metaheac/schema.py's tables cannot hold."""
    names = [schema.STATIC_COLUMNS, schema.SEQUENCE_COLUMNS, schema.AD_COLUMNS]
    return ["%s: max id %d > %d" % (name, got, allowed)
            for group, got_group, allowed_group in zip(names, max_idxs, schema.DEFAULT_MAX_IDXS)
            for name, got, allowed in zip(group, got_group, allowed_group) if got > allowed]


def preprocess(raw_dir, out_dir, seed=2021, threshold=4000, layout="lookalike", allow_larger_ids=False):
    """Read raw_dir's files and write the layout under out_dir.

    Returns {FRAME_KEYS item: path}, the Encoded data and {FRAME_KEYS item: its rows in Encoded}.
    """
    paths = {key: os.path.join(raw_dir, name) for key, name in RAW_FILES.items()}
    ads = read_ads(paths["ads"])
    seeds = read_labelled_rows(paths["seeds"], has_header=True)
    candidates = read_labelled_rows(paths["candidates"], has_header=False)
    wanted = np.unique(np.concatenate([seeds["uid"].to_numpy(), candidates["uid"].to_numpy()]))
    users = read_users(paths["users"], wanted, progress_printer("reading " + RAW_FILES["users"]))
    _check_joins(seeds, candidates, ads, users, paths)
    encoded = encode(pd.concat([seeds, candidates], ignore_index=True), ads, users)
    overflows = schema_overflows(encoded.max_idxs)
    if overflows and not allow_larger_ids:
        raise RawDataError("ids exceed metaheac/schema.py's tables (%s); rerun with --allow-larger-ids and train "
                           "with -o hyper_parameters.max_idxs=%s" % ("; ".join(overflows),
                                                                     _compact_json(encoded.max_idxs)))

    is_train, hot = split_campaigns(encoded.aid, encoded.label, seed, threshold)
    stage2 = np.arange(len(encoded.aid)) >= len(seeds)
    selections = split_masks(~is_train[encoded.aid], hot[encoded.aid], stage2)
    out_paths, written = layout_paths(out_dir, layout), {}
    for key, mask in selections.items():
        rows = np.flatnonzero(mask)
        source_row = np.where(stage2[rows], rows - len(seeds), rows)  # the row's number in its file
        write_frame(out_paths[key], encoded.columns(rows), source_row,
                    progress_printer("writing " + os.path.relpath(out_paths[key], out_dir)))
        written[key] = rows
    return out_paths, encoded, written


def _compact_json(value):
    return json.dumps(value, separators=(",", ":"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", help="folder with %s" % ", ".join(RAW_FILES.values()))
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "datasets", "Lookalike"),
                        help="output folder (default: datasets/Lookalike, as config_big.yaml)")
    parser.add_argument("--seed", type=int, default=2021, help="draws the meta-train half of the campaigns (default 2021)")
    parser.add_argument("--threshold", type=int, default=4000, metavar="T",
                        help="a test campaign with more than T positive rows (both stages) is hot "
                             "(default 4000, as PaddleRec's readme; the authors' script uses 2000)")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="lookalike",
                        help="folder layout (default: lookalike, as config_big.yaml)")
    parser.add_argument("--allow-larger-ids", action="store_true",
                        help="write the files even if ids exceed metaheac/schema.py's max ids")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        paths, encoded, written = preprocess(args.raw_dir, args.out, args.seed, args.threshold, args.layout,
                                             args.allow_larger_ids)
    except RawDataError as error:
        sys.exit("error: %s" % error)
    for key, path in paths.items():
        rows = written[key]
        print(summary(path, encoded.label[rows], encoded.aid[rows]))
    print("train and infer with: -o hyper_parameters.max_idxs=%s" % _compact_json(encoded.max_idxs))
    print("elapsed %.1fs" % (time.time() - start))

if __name__ == "__main__":
    main()
