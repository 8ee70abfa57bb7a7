# webhookd tasks. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build and run webhookd on 127.0.0.1:8000 (installs nats-server if missing)
run *ARGS:
    WEBHOOKD_NATS_SERVER_BIN="$(scripts/install-nats-server)" cargo run --release --bin webhookd -- {{ARGS}}

# Run the whole test suite (installs nats-server if missing)
test:
    NATS_SERVER_BIN="$(scripts/install-nats-server)" cargo test --workspace --all-targets

# Install nats-server if missing and print its path
install-nats:
    scripts/install-nats-server

# Run the terminal UI against a local webhookd
tui *ARGS:
    cargo run --release -p webhookd-tui -- {{ARGS}}

# Formatting and lints, as CI expects them
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
