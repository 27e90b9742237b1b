# `make test` and `make demo` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data test test-fast demo benchmarks wheel clean

setup: $(VENV)/.installed data

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[test,plots]'
	touch $@

# Fashion-MNIST from the Debian package when apt-get is there; elsewhere the
# loader falls back to the Keras cache or a download.
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get install -y dataset-fashion-mnist || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist) || \
		echo "warning: could not install dataset-fashion-mnist; the loader will try the Keras cache"; \
	fi

# Tests run in parallel processes (pytest-xdist), one per core, at most 4: most of them
# spend their time in single-threaded Python and small TensorFlow graphs.
# worksteal keeps the 20-seed quality test from holding up the rest.
PYTEST := $(PY) -m pytest -q -ra -n auto --maxprocesses 4 --dist worksteal --durations=15

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

demo: setup
	$(PY) -m keras_learned_opt.demo

wheel: setup
	$(PY) -m pip wheel --no-deps . -w dist

clean:
	rm -rf build dist *.egg-info

benchmarks: setup
	$(PY) benchmarks/update_throughput.py
	$(PY) benchmarks/fit_step_ratio.py --xla
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/meta_train_throughput.py
