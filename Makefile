# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= config.yaml

.PHONY: demo test train infer data clean

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

# Meta-train on the sample data, then fine-tune and rank on the hot and the cold campaigns;
# prints their table and writes the report to output_model_metaheac/infer/0.
demo: $(VENV)/.installed
	$(PY) tools/trainer.py -m $(CONFIG)
	$(PY) infer.py -m $(CONFIG) -o 'runner.test_data_dirs=[data/test,data/test_cold]'

test: $(VENV)/.installed
	$(PY) -m pytest tests -q

# Regenerate the shipped sample data (reproducible from the seed).
data: $(VENV)/.installed
	$(PY) tools/generate_data.py --preset sample --seed 2021 --out data

clean:
	rm -rf output_model_metaheac .pytest_cache audience.csv serving
