# netshape — see README.md. Every target works on a fresh Debian machine with Go.
GO      ?= go
BIN     ?= bin/netshape
export CGO_ENABLED := 0
# Flags for `make run`: a sensible default is embedded in the binary; add more here.
RUN_FLAGS ?=
PKGS    := ./...

.PHONY: all build deps test test-race test-short vet cross run bench bench-quick release clean fmt

all: build

# deps installs what builds and tests need: Go modules, and the few Debian
# packages the end-to-end tests drive (iproute2 for namespaces, curl as a real client).
deps:
	@command -v $(GO) >/dev/null || { echo "Go is required: https://go.dev/dl (Go 1.26+)"; exit 1; }
	$(GO) mod download
	@missing=""; command -v ip >/dev/null || missing="$$missing iproute2"; \
	 command -v curl >/dev/null || missing="$$missing curl"; \
	 if [ -n "$$missing" ]; then \
	   if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	     apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	   else echo "note: install$$missing for the end-to-end tests"; fi; \
	 fi

build: deps
	$(GO) build -trimpath -o $(BIN) ./cmd/netshape

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	for os in linux darwin freebsd; do GOOS=$$os $(GO) vet $(PKGS) || exit 1; done

# cross compiles the binary and every test binary for the pf systems (no Mac or
# BSD here: compiling is what we can prove).
cross:
	GOOS=darwin  GOARCH=arm64 $(GO) build -o /dev/null ./cmd/netshape
	GOOS=darwin  GOARCH=amd64 $(GO) build -o /dev/null ./cmd/netshape
	GOOS=freebsd GOARCH=amd64 $(GO) build -o /dev/null ./cmd/netshape
	GOOS=darwin  $(GO) test -count=1 -exec /bin/true $(PKGS) >/dev/null
	GOOS=freebsd $(GO) test -count=1 -exec /bin/true $(PKGS) >/dev/null

# test: the whole suite. End-to-end tests need root (they build network
# namespaces); as a normal user they skip with a message.
test: deps vet cross
	$(GO) test -count=1 -timeout 14m $(PKGS)

# test-race: the suite under the race detector. It needs cgo (a C compiler),
# so it is not part of `make test`; the binary the e2e tests run is still built
# with CGO_ENABLED=0, as shipped.
test-race: deps
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 14m $(PKGS)

test-short: deps
	$(GO) test -count=1 -short $(PKGS)

# run builds and starts the daemon in the foreground with the embedded default
# config. It redirects every outbound TCP connection of the network namespace it
# runs in: try it in a namespace first (see README).
run: build
	@[ "$$(id -u)" = 0 ] || { echo "netshape start needs root: sudo make run"; exit 1; }
	./$(BIN) start $(RUN_FLAGS)

bench: build
	bench/run.sh

bench-quick: build
	bench/run.sh --quick

release: deps
	@mkdir -p dist
	for t in darwin/amd64 darwin/arm64 freebsd/amd64 linux/amd64 linux/arm64; do \
	  os=$${t%/*}; arch=$${t#*/}; \
	  GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags='-s -w' -o dist/netshape-$$os-$$arch ./cmd/netshape || exit 1; \
	done

clean:
	rm -rf bin dist
