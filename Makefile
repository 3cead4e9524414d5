# The two commands of the README:
#   make book   builds the book, executing every chapter (creates .venv first)
#   make test   runs the whole test suite (same bootstrap)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: book book-clean test venv bench clean

# Executions are cached (_config.yml: execute_notebooks: cache), keyed by each chapter's code:
# a rebuild re-executes only the chapters whose code changed. The cache cannot see the package,
# so when any file of hybridlab/ changed since the last build, every chapter runs again.
PACKAGE_HASH = $(shell cat $$(find hybridlab -name '*.py' | sort) | sha256sum | cut -c1-16)

book: $(STAMP)
	$(PY) book/vendor.py
	@if [ "$$(cat _build/.package-hash 2>/dev/null)" = "$(PACKAGE_HASH)" ]; then \
		$(VENV)/bin/jupyter-book build . ; \
	else \
		echo "hybridlab changed since the last build (or first build): executing every chapter"; \
		rm -rf _build/.jupyter_cache && $(VENV)/bin/jupyter-book build --all . ; \
	fi
	echo $(PACKAGE_HASH) > _build/.package-hash

# A clean build: forget the cached executions and the built pages, then build everything.
book-clean: $(STAMP)
	rm -rf _build
	$(MAKE) book

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/step_time.py

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

clean:
	rm -rf _build book/_vendor
