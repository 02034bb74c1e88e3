# graft: developer and CI entry points. See README.md.

GRAFT_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&binary_parameters=yes
GRAFT_REDIS_URL ?= redis://127.0.0.1:6379/0
export GRAFT_DATABASE_URL GRAFT_REDIS_URL

GO ?= go

.DEFAULT_GOAL := test
.PHONY: services browser demo test bench vet lint cross

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

test: services browser cross
	$(GO) test -race -count=1 -timeout 15m ./...

bench: services
	$(GO) run ./cmd/graft bench -n 20000 -c 256

vet:
	$(GO) vet ./...

# The CLI builds on every OS family Go supports (js/wasm and wasip1 aside: no sockets for
# PostgreSQL): compile only. Platform-specific code (getrusage, socket errnos, the
# run-as-postgres credential) sits behind build tags; this keeps it there. Add a platform
# (linux/386, aix/ppc64, illumos/amd64, ...) once it has been seen to build. Without
# optimisation or inlining (nothing runs what it builds): a cold build of a target took 55 s
# against 78 s, and on a fresh machine these builds are most of what CI compiles.
CROSS ?= windows/amd64 darwin/arm64 freebsd/amd64 openbsd/amd64 netbsd/amd64 dragonfly/amd64 \
	solaris/amd64 plan9/amd64
cross:
	@set -e; for p in $(CROSS); do \
		echo "go build ./cmd/graft for $$p"; \
		GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -gcflags='all=-N -l' -o /dev/null ./cmd/graft; \
	done

# golangci-lint v2, pinned with a tool directive in internal/tools/lint.mod
# (a file of its own, so graft's go.mod does not carry its ~190 modules to
# every program that imports graft); .golangci.yml says what it checks. The
# go build cache keeps the linter built and golangci-lint's own cache
# (GOLANGCI_LINT_CACHE, default ~/.cache/golangci-lint) keeps its results,
# so a second run rechecks only what changed.
lint:
	$(GO) tool -modfile=internal/tools/lint.mod golangci-lint run ./...
