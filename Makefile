# The two commands of the README: `make demo` and `make test`. Both install first.
PYTHON ?= python3
# The commands hide TensorFlow's C++ start-up chatter themselves (README "Quiet start"); level 2 also drops
# TensorFlow's C++ warnings from the test logs.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test bench

install:
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q -e . --no-deps

demo: install
	$(PYTHON) train.py --config zoo_configs/rotnet_convnet_small_synthetic.yaml --output runs/demo
	$(PYTHON) export.py --run runs/demo --output runs/demo/export --force
	$(PYTHON) -c "import sslzoo, numpy as np; e = sslzoo.load('runs/demo/export'); print('features:', e.predict(np.random.rand(2, 32, 32, 3).astype('float32'), verbose=0).shape)"

test: install
	$(PYTHON) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=30 tests

bench: install
	$(PYTHON) -m sslzoo.bench
