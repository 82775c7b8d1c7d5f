"""Support code of the MetaHeac model module: everything but the PaddleRec entry points.

The repo root keeps the files a PaddleRec user looks for (``net.py``, ``maml.py``,
``dygraph_model.py``, the readers, ``infer.py``, ``expand.py``, the configs); they
and ``tools/`` import what they share from here:

- ``schema``: columns, widths and vocabularies of the data (the one description);
- ``settings``: every config key with its default, and the checks of its values;
- ``meta_options``: the meta-learning switches;
- ``data_files``: reading and writing data files, the restricted unpickler, the cache;
- ``layout``: data folder layouts, test-set splits, raw competition file names;
- ``metrics``, ``report``, ``plots``, ``training_curve``: evaluation and its outputs;
- ``atomic_files``: every file a user keeps is written to a temporary name and renamed;
- ``reference``: straightforward formulations (upstream's full-table meta-step,
  full-model fine-tuning) and random inputs of the schema, which the tests and the
  benchmark compare against.
"""
