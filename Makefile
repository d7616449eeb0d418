# The README's two commands: `make run` and `make test`. Both set everything up first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
# Runtime files; settings read the generated secret key from here when DJANGO_SECRET_KEY is unset.
VAR_DIR ?= var
SECRET_FILE := $(VAR_DIR)/secret_key

.PHONY: run test lint bench install superuser

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*; touch $(STAMP)

# One key per checkout, kept across runs so admin sessions survive a restart.
$(SECRET_FILE):
	mkdir -p $(VAR_DIR)
	umask 077 && $(PY) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@

# After this every manage.py command in the README works as is (no variable to export).
install: $(STAMP) $(SECRET_FILE)
	$(BIN)/python manage.py migrate --noinput

run: $(STAMP) $(SECRET_FILE)
	./scripts/run.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	DJANGO_SECRET_KEY=lint-only-key $(BIN)/python manage.py check
	DJANGO_SECRET_KEY=lint-only-key $(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_SECRET_KEY=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))') \
	  ALLOWED_HOSTS=gateway.example.com SECURE_SSL_REDIRECT=true \
	  $(BIN)/python manage.py check --deploy --fail-level WARNING

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# Interactive, or unattended when DJANGO_SUPERUSER_USERNAME (and _PASSWORD, _EMAIL) are set.
superuser: install
	$(BIN)/python manage.py createsuperuser $(if $(DJANGO_SUPERUSER_USERNAME),--noinput)
