"""Convert pickled Look-alike data files to the columnar .npz form, which loads without pickle.

    python tools/convert_data.py data/train/train_stage1.pkl [more.pkl ...] [--out-dir DIR]

Each ``X.pkl`` becomes ``X.npz`` (beside it, or in ``--out-dir``). Readers take either
form, so converted data can be shared without the risks of unpickling. Move the
``.pkl`` away from a data folder that holds its ``.npz``: a folder must not hold both.
"""
import argparse
import os
import sys

import utils  # noqa: F401  (puts the repo root, and so the metaheac package, on the path)
from metaheac.data_files import DataError, frame_to_columns, read_frame, save_columnar  # noqa: E402


def convert(source, out_dir=None):
    out_dir = out_dir or os.path.dirname(source)
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, os.path.splitext(os.path.basename(source))[0] + ".npz")
    save_columnar(frame_to_columns(read_frame(source), source), target)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="pickled DataFrame files (.pkl)")
    parser.add_argument("--out-dir", help="write the .npz files here instead of beside each source")
    args = parser.parse_args(argv)
    try:
        for source in args.sources:
            print("%s -> %s" % (source, convert(source, args.out_dir)))
    except DataError as error:
        sys.exit("error: %s" % error)


if __name__ == "__main__":
    main()
