# The two commands of the README:
#   make book   builds the book, executing every chapter (creates .venv first)
#   make test   runs the whole test suite (same bootstrap)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: book course test venv bench clean

book: $(STAMP)
	$(PY) book/vendor.py
	$(VENV)/bin/jupyter-book build --all .

# The course edition: the same book with every exercise solution hidden (sphinx-exercise's
# hide_solutions), built into _build/course/_build/html.
course: $(STAMP)
	$(PY) book/vendor.py
	$(PY) book/course_config.py _build/course_config.yml
	$(VENV)/bin/jupyter-book build --all --config _build/course_config.yml --path-output _build/course .

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
