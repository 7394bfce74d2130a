# ironroot: the two commands of the quick start are `make demo` and `make test`.
# Each installs the Debian packages it needs first (scripts/install-deps.sh).

.PHONY: demo test bench lint deps build image deb

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

# Debian packages ironroot-server and ironroot-agent from a release build, in
# target/debian/ (docs/packaging.md). make test installs and purges dev-built ones.
deb: deps
	bash packaging/build-deb.sh --profile release

# The edge gateway image (images/README.md): not part of demo or test.
image: deps
	bash scripts/install-deps.sh --image
	bash images/build.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	@# deny.toml: licenses, duplicate versions, sources (advisories need the network).
	@if command -v cargo-deny >/dev/null; then cargo deny check licenses bans sources; \
	else echo "cargo-deny is not installed: deny.toml not checked (cargo install cargo-deny)"; fi
