# The two commands (see README.md): each installs what it needs first (scripts/setup says what
# and why), then runs cargo.
.PHONY: demo test

# The demo: gateway (:8080, admin :9091) + the embedded sandbox platform (:9443), test keys.
demo:
	@scripts/setup demo
	@# Secret files others may write are refused (docs/security.md); a checkout made with umask 002
	@# would give the demo's test keys group write.
	@chmod go-w conf/keys/*
	cargo run --release -- demo

# The whole test suite: unit, vector, config and end-to-end tests with real processes.
test:
	@scripts/setup test
	cargo test --workspace
