# webhookd tasks. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build and run webhookd on 127.0.0.1:8000 (installs nats-server if missing)
run *ARGS:
    WEBHOOKD_NATS_SERVER_BIN="$(scripts/install-nats-server)" cargo run --release --bin webhookd -- {{ARGS}}

# Run the whole test suite (installs nats-server and the test tools if missing)
test:
    scripts/install-test-tools
    NATS_SERVER_BIN="$(scripts/install-nats-server)" cargo test --workspace --lib --bins --tests --examples
    if [ "$(id -u)" = 0 ]; then deploy/check-container; else deploy/check-container --static-only; fi
    just bench-quick
    just chaos-quick

# Install nats-server if missing and print its path
install-nats:
    scripts/install-nats-server

# Run the terminal UI against a local webhookd
tui *ARGS:
    cargo run --release -p webhookd-tui -- {{ARGS}}

# Formatting and lints, as CI expects them
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmark on loopback: release build, all scenarios, table + target/bench/results.json.
# Arguments go to `bench run`, e.g. `just bench --only baseline,ingest --n 10000`.
bench *ARGS:
    cargo build --release --bin webhookd
    cargo bench --bench bench --no-run
    WEBHOOKD_NATS_SERVER_BIN="$(scripts/install-nats-server)" cargo bench --bench bench -- run {{ARGS}}

# Quick benchmark pass (N=2,000 per scenario, debug build as `just test` leaves it):
# fails on correctness (lost, errors, attempt rows), never on speed.
bench-quick *ARGS:
    cargo build --bin webhookd
    WEBHOOKD_NATS_SERVER_BIN="$(scripts/install-nats-server)" cargo test --bench bench -- run --quick {{ARGS}}

# Chaos suite on loopback: release build, kill -9 / NATS crashes / bad receivers /
# disk full / SIGTERM / SIGSTOP; fails on any loss. Arguments go to `chaos run`,
# e.g. `just chaos --only nats-kill9 --seed 42`.
chaos *ARGS:
    cargo build --release --bin webhookd
    WEBHOOKD_NATS_SERVER_BIN="$(scripts/install-nats-server)" cargo bench --bench chaos -- run {{ARGS}}

# Reduced chaos run for CI (1,000-1,500 webhooks per scenario, each scenario once,
# under 3 minutes; debug build as `just test` leaves it). The disk-full scenario
# needs root (tmpfs mount): SKIPPED loudly otherwise, a failure when CI=true.
chaos-quick *ARGS:
    cargo build --bin webhookd
    WEBHOOKD_NATS_SERVER_BIN="$(scripts/install-nats-server)" cargo test --bench chaos -- run --quick {{ARGS}}
