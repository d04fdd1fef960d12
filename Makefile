# vdiskfs — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
NODE_BIN := node_modules/.bin
CLI := node dist/cli/main.js

.PHONY: all setup deps build native demo test unit native-test bench clean typecheck
# native/sys: the few system calls Node lacks (polling /dev/fuse, RWF_NOWAIT reads, fallocate).
# Built against the running Node's own headers when it has them (Debian's nodejs does), else
# node-gyp fetches them.
NATIVE := native/sys/build/Release/vdiskfs_sys.node
NODEDIR := $(shell d=$$(dirname $$(dirname $$(command -v node))); [ -f $$d/include/node/node_api.h ] && echo $$d)

all: build

## setup: system packages, npm dependencies, and the build
setup: deps node_modules/.installed build

deps:
	@scripts/install-deps.sh

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

build: node_modules/.installed $(NATIVE)
	$(NODE_BIN)/tsc -p tsconfig.json
	@chmod +x dist/cli/main.js

native: $(NATIVE)

$(NATIVE): native/sys/sys.c native/sys/binding.gyp node_modules/.installed
	cd native/sys && ../../$(NODE_BIN)/node-gyp rebuild --loglevel=warn $(if $(NODEDIR),--nodedir=$(NODEDIR))

typecheck: node_modules/.installed
	$(NODE_BIN)/tsc -p tsconfig.json --noEmit

## demo: a 1 GiB demo disk under ./demo, mounted at ./demo/mnt in the foreground (Ctrl-C unmounts)
demo: setup
	@scripts/demo.sh

## test: setup, then unit tests (no mount) and native tests (FUSE, loop devices, qemu-img, fio)
test: setup
	$(NODE_BIN)/vitest run
	$(NODE_BIN)/vitest run --config native-test/vitest.config.ts

unit: build
	$(NODE_BIN)/vitest run

native-test: build
	$(NODE_BIN)/vitest run --config native-test/vitest.config.ts

## bench: vdiskfs against QEMU's FUSE export, xmount and the raw file, one run, same fio workloads, ratios
##   make bench QUICK=1 (under 5 min)   make bench TARGETS=flat-raw,qsd-raw   results under bench/results/
bench: setup
	node dist/bench/main.js $(if $(filter 1 yes true,$(QUICK)),--quick) $(if $(TARGETS),--targets $(TARGETS))

clean:
	rm -rf dist node_modules/.installed native/sys/build
