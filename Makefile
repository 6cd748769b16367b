# The README's two commands are `make run` and `make test`.
PY := .venv/bin/python

.PHONY: setup run test test-all demo-data demo-model lint

setup:
	scripts/setup.sh

# The app on the bundled demo model with the synthetic camera: a window where there is a
# display, otherwise headless with events on stdout.
run: setup
	$(PY) -m app --model models/demo --source synthetic $(if $(DISPLAY),,--headless --events -) $(ARGS)

test:
	scripts/setup.sh --system
	scripts/test.sh

test-all:
	scripts/setup.sh --system
	scripts/test.sh -m "not edgetpu"

# Rebuild models/demo from scratch: synthetic data, float + quantization-aware training, export.
# runs/demo is the demo's own workdir and starts empty each time (train refuses a used one).
demo-model: setup
	$(PY) -m training synth --out data/synth
	rm -rf runs/demo
	$(PY) -m training train --config config.yaml --workdir runs/demo --data data/synth
	$(PY) -m training export --config config.yaml --workdir runs/demo --out models/demo --force
