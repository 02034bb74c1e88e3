# graft: developer and CI entry points. See README.md.

GRAFT_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&binary_parameters=yes
GRAFT_REDIS_URL ?= redis://127.0.0.1:6379/0
export GRAFT_DATABASE_URL GRAFT_REDIS_URL

GO ?= go

.DEFAULT_GOAL := test
.PHONY: services browser demo test bench vet

# Make sure PostgreSQL and Redis answer at the URLs above. The script changes only what it
# created itself unless CI=true or GRAFT_SETUP_SERVICES=1; otherwise it says what is missing
# and how to fix it (see scripts/services.sh).
services:
	./scripts/services.sh test

demo:
	./scripts/services.sh demo
	$(GO) run ./examples/domainrenew

# The web UI's tests drive a real headless Chromium (scripts/browser.sh installs it under
# the same rules as services.sh).
browser:
	./scripts/browser.sh

test: services browser
	$(GO) test -race -count=1 -timeout 15m ./...

bench: services
	$(GO) run ./cmd/graft bench -n 20000 -c 256

vet:
	$(GO) vet ./...
