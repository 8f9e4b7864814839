//! `cargo xtask <command>`: what cargo alone cannot do. Every command runs `setup` first.

mod build_packs;
mod demo;
mod fuzz;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "taskless-agent project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a fresh machine lacks (idempotent): nightly rust-src, the wasm target,
    /// bpf-linker built against the nightly toolchain's LLVM, wasm-opt, Debian packages the
    /// tests use, the Go toolchains the tests build Go programs with.
    Setup,
    /// Build the shipped packs into target/packs (the agent's default pack directory).
    BuildPacks,
    /// Start a local HTTPS API, real clients calling it, and the agent watching them.
    Demo {
        /// How long to watch before stopping.
        #[arg(long, default_value_t = 12)]
        seconds: u64,
    },
    /// Regenerate the table of Go struct offsets (agent/src/capture/gotls/table.rs) from the DWARF
    /// of a program built by each Go toolchain setup installs.
    GoOffsets,
    /// Run the fuzz targets of http/fuzz (cargo-fuzz, nightly) for a bounded time each on the
    /// seed corpus kept in http/fuzz/seeds; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Run every test: formatting, lints, unit tests, pack tests, a short fuzz run and
    /// end-to-end tests with the real eBPF programs (needs root).
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy`.
        #[arg(long)]
        no_lint: bool,
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
}

/// Builds the shipped packs into `target/packs`, with the wasm-opt setup installed.
fn build_packs(root: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let options = build_packs::BuildOptions {
        wasm_opt: setup::wasm_opt_path(),
    };
    build_packs::build_packs_with(root, &util::target_dir(root).join("packs"), &options)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = util::repo_root()?;
    match cli.command {
        Command::Setup => setup::ensure(),
        Command::BuildPacks => {
            setup::ensure()?;
            build_packs(&root).map(|_| ())
        }
        Command::Demo { seconds } => demo::run(&root, seconds),
        Command::GoOffsets => {
            setup::ensure()?;
            util::run(
                util::cargo()
                    .args([
                        "test",
                        "-p",
                        "taskless-agent",
                        "--test",
                        "go_binaries",
                        "--",
                    ])
                    .args([
                        "--exact",
                        "the_offsets_table_agrees_with_the_dwarf_of_every_toolchain",
                    ])
                    .env("TASKLESS_WRITE_GO_OFFSETS", "1"),
            )
        }
        Command::Fuzz { seconds, target } => fuzz::run(&root, seconds, target.as_deref()),
        Command::Test { no_lint, filter } => test::run(&root, no_lint, filter.as_deref()),
    }
}
