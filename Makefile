# ironroot: the two commands of the quick start are `make demo` and `make test`.
# Each installs the Debian packages it needs first (scripts/install-deps.sh).

.PHONY: demo test bench lint deps build

deps:
	bash scripts/install-deps.sh

build: deps
	cargo build --workspace

demo: deps
	bash scripts/demo.sh

test: deps
	bash scripts/test.sh

bench: deps
	bash scripts/bench.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
