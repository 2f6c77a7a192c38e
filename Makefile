# One-command set-up and use on a fresh Debian/Ubuntu machine (run as root), quick when already set up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := jackd2 libfluidsynth3 timgm6mb-soundfont chromium
ARGS ?=
# make run: the MIDI ports (when there is a MIDI system), FluidSynth audio and the page at http://127.0.0.1:8765/
RUN_ARGS ?= --output virtual --output fluidsynth --port 8765

.PHONY: run test system venv bench lint clean model

# The system packages: JACK for MIDI ports, FluidSynth for audio, a small General MIDI soundfont.
system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# torch is pinned to 2.13.0 so that the local CPU build is used and nothing else is downloaded.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: system venv
	$(VENV)/bin/musebot serve $(RUN_ARGS) $(ARGS)

test: system venv
	$(PY) -m pytest -q $(ARGS)

bench: system venv
	$(PY) -m musebot.bench tokenize

# Rebuild the shipped model (musebot/assets/model) from music21's bundled corpus: dataset, training (about
# 80 minutes on 2 CPU cores: 1,200 steps with the reference's augmentation, then 1,100 steps that keep the
# pieces in C major / A minor), export with verification, and the evaluation table of its model card.
MODEL_RUN := runs/ship
TRAIN_FLAGS := --preset tv2o-small --batch-size 16 --max-len 256 --val-every 300 --val-batches 20 --threads 2
model: venv
	$(VENV)/bin/musebot dataset build music21:bach music21:folk --transpose --out runs/data
	$(VENV)/bin/musebot train --data runs/data $(TRAIN_FLAGS) --out $(MODEL_RUN)-1 --max-steps 1200 \
	  --lr 1e-3 --warmup-steps 150
	$(VENV)/bin/musebot train --data runs/data $(TRAIN_FLAGS) --out $(MODEL_RUN)-2 --max-steps 1100 \
	  --lr 6e-4 --warmup-steps 50 --max-pitch-shift 0 --init $(MODEL_RUN)-1/model
	$(VENV)/bin/musebot export $(MODEL_RUN)-2/model --out musebot/assets/model --precision int8
	cp $(MODEL_RUN)-2/model/model.safetensors musebot/assets/model/
	$(VENV)/bin/musebot eval --data runs/data --plot runs/eval.png --json > runs/eval.json

lint: venv
	$(VENV)/bin/ruff check musebot tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
