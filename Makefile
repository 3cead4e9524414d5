# The two commands of the README:
#   make book   builds the book, executing every chapter (creates .venv first)
#   make test   runs the whole test suite (same bootstrap)
#   make lab    opens the chapters in JupyterLab (same bootstrap), MyST markup rendered by jupyterlab-myst
#   make mutation  mutation testing of the method and the device physics (long; not part of make test)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: book book-clean course test lab mutation venv bench clean

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

# The course edition: the same book with every exercise solution hidden (sphinx-exercise's
# hide_solutions), built into _build/course/_build/html.
course: $(STAMP)
	$(PY) book/vendor.py
	$(PY) book/course_config.py _build/course_config.yml
	$(VENV)/bin/jupyter-book build --all --config _build/course_config.yml --path-output _build/course .

test: $(STAMP)
	$(PY) -m pytest -q

# The chapters as a student works with them: live widgets, and the admonitions, citations and
# exercises rendered by the jupyterlab-myst extension of requirements.txt.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab chapters/

# mutmut plants one bug at a time in zo, sketch, lowrank, surrogate, layer and devices/ and runs the
# fast unit tests that reach the mutated function ([tool.mutmut] in pyproject.toml), one process at
# a time. Results are kept in mutants/: a rerun only tests what changed. Prints the score.
mutation: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 1
	$(VENV)/bin/mutmut export-cicd-stats
	$(PY) -c 'import json; s = json.load(open("mutants/mutmut-cicd-stats.json")); \
	k = s["killed"] + s["timeout"]; n = s["no_tests"]; t = s["total"] - s["skipped"] - n; \
	print(f"mutation score: {k} of {t} mutants killed ({100 * k / t:.1f} %); {n} more reached by no unit test")'
	$(VENV)/bin/mutmut results

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
	rm -rf _build book/_vendor mutants
