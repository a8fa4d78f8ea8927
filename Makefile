# All set-up happens here: `make test` and `make demo` create .venv on a fresh clone.
PYTHON ?= python3
VENV := .venv
TANKER_MODEL := geoseg/weights/tankers-light.safetensors
LUNG_MODEL := geoseg/weights/lungs-unet.safetensors
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo docs lint format bench clean venv tanker-data tanker-model nightly lung-model

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo: a synthetic 8000 x 8000 scene (a seed the model never saw), the committed tanker model,
# GeoJSON out, scored against the scene's truth, and an HTML report to open in a browser.
DEMO := demo
demo: $(STAMP)
	mkdir -p $(DEMO)
	test -f $(DEMO)/scene.tif || $(BIN)/geoseg synth tankers $(DEMO)/scene.tif --size 8000 --gsd 1.5 \
	  --crs EPSG:32631 --seed 7 --clouds
	$(BIN)/geoseg predict $(DEMO)/scene.tif -m $(TANKER_MODEL) -o $(DEMO)/tankers.geojson --overwrite
	$(BIN)/geoseg eval $(DEMO)/tankers.geojson $(DEMO)/scene.truth.geojson -o $(DEMO)/eval.json --overwrite
	$(BIN)/geoseg report $(DEMO)/tankers.geojson -s $(DEMO)/scene.tif -t $(DEMO)/scene.truth.geojson \
	  -o $(DEMO)/report.html --overwrite

# The shipped nightly job over a small synthetic archive (three 2000 x 2000 scenes, made once).
nightly: $(STAMP)
	mkdir -p archive
	for i in 1 2 3; do test -f archive/scene$$i.tif || $(BIN)/geoseg -q synth tankers archive/scene$$i.tif \
	  --size 2000 --seed $$((400 + i)) --gsd 1.5; done
	$(BIN)/geoseg run jobs/nightly-tankers.yaml

test: $(STAMP)
	$(BIN)/ruff check geoseg tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check geoseg tests bench
	$(BIN)/ruff format --check geoseg tests bench

format: $(STAMP)
	$(BIN)/ruff format geoseg tests bench
	$(BIN)/ruff check --fix geoseg tests bench

# docs/options.md's table, made again from the options registry (geoseg.inference.options)
docs: $(STAMP)
	$(BIN)/python -m geoseg.inference.options docs/options.md

clean:
	rm -rf $(VENV) build *.egg-info

# The committed tanker model, made again from scratch (about 70 minutes on a 2-core CPU):
# ten training scenes at 0.8-2.5 m, one validation scene, then `geoseg train maskrcnn` with a share
# of hard-negative chips (windows where the model last saw false tankers).
TANKER_DATA := build/tanker-data
GSDS := 0.8 0.9 1.0 1.2 1.3 1.5 1.6 1.8 2.0 2.5

tanker-data: $(STAMP)
	mkdir -p $(TANKER_DATA)
	i=0; for g in $(GSDS); do i=$$((i+1)); \
	  test -f $(TANKER_DATA)/train$$i.tif || $(BIN)/geoseg -q synth tankers $(TANKER_DATA)/train$$i.tif --size 2500 \
	    --gsd $$g --tankers 30 --seed $$((100+i)) $$( [ $$((i%3)) = 0 ] && echo --clouds ) || exit 1; done
	test -f $(TANKER_DATA)/val.tif || $(BIN)/geoseg -q synth tankers $(TANKER_DATA)/val.tif --size 2500 --gsd 1.4 \
	  --tankers 30 --seed 200

tanker-model: tanker-data
	mkdir -p geoseg/weights
	OMP_WAIT_POLICY=PASSIVE $(BIN)/geoseg train maskrcnn \
	  $$(for i in $$(seq 10); do echo --train $(TANKER_DATA)/train$$i.tif $(TANKER_DATA)/train$$i.truth.geojson; done) \
	  --val $(TANKER_DATA)/val.tif $(TANKER_DATA)/val.truth.geojson \
	  --config light --iterations 2400 --batch-size 4 --chip-size 256 --lr 0.02 --focus 0.5 --hard-negatives 0.15 \
	  --val-every 400 --max-gsd 1.5 --match-radiometry --seed 0 -o $(TANKER_MODEL) --overwrite

# The committed lung U-Net, made again from scratch (about 20 minutes on an idle 2-core CPU):
# 480 training slices from 48 synthetic patients and 60 validation slices from 6 others, half of
# the patients domain-randomised (lung density from emphysema to poorly aerated, scanner, noise,
# streaks), then `geoseg train unet` on slices calibrated so that air reads -1000 HU, with dark
# and flattened lungs (--class-intensity, never below -945 HU) and strong augmentation (the
# command is also in the checkpoint's metadata). Phantom family B, never trained on, is measured
# by bench/robustness.py (bench/README.md).
LUNG_DATA := build/lung-data

lung-model: $(STAMP)
	mkdir -p $(LUNG_DATA) geoseg/weights
	$(BIN)/geoseg synth lungs $(LUNG_DATA)/train --slices 480 --patients 48 --size 512 --seed 1 --randomize 0.5 --overwrite
	$(BIN)/geoseg synth lungs $(LUNG_DATA)/val --slices 60 --patients 6 --size 512 --seed 2 --randomize 0.5 --overwrite
	OMP_WAIT_POLICY=PASSIVE $(BIN)/geoseg train unet --images $(LUNG_DATA)/train/images --masks $(LUNG_DATA)/train/masks \
	  --val-images $(LUNG_DATA)/val/images --val-masks $(LUNG_DATA)/val/masks \
	  --epochs 30 --batch-size 8 --tile 256 --window -600,1500 --depth 4 --base-width 8 --lr 0.003 --streaks 0.3 --min-area 400 --complete=-400,-500 \
	  --gas-below=-975 --spacing 0.732 --calibrate-air=-1000 \
	  --class-intensity 0.5 --class-shift=-250,50 --class-floor=-945 --strong-augment \
	  --seed 0 \
	  -o $(LUNG_MODEL) --overwrite
