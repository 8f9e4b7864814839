//! `cargo xtask <command>`: what cargo alone cannot do. Every command runs `setup` first.

mod bench;
mod build_packs;
mod demo;
mod fuzz;
mod image;
mod manifests;
mod procs;
mod setup;
mod soak;
mod soak_memory;
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
    /// tests use (podman and mmdebstrap among them), the Go toolchains the tests build Go
    /// programs with, and the manifest tools' Python packages.
    Setup {
        /// Only what building the agent and the packs needs (no test tools).
        #[arg(long)]
        build_only: bool,
    },
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
    /// Build the container image from the Containerfile (base images made with mmdebstrap from
    /// Debian packages and imported into podman).
    Image {
        /// Build only the runtime stage, from the agent and packs built on the host (stripped
        /// of debug information) instead of compiling inside the build stage.
        #[arg(long)]
        prebuilt: bool,
        /// With `--prebuilt`: the release build rather than the debug one.
        #[arg(long, requires = "prebuilt")]
        release: bool,
        /// The image's name.
        #[arg(long, default_value = concat!("localhost/taskless-agent:", env!("CARGO_PKG_VERSION")))]
        tag: String,
    },
    /// Render the Helm chart into deploy/kubernetes and validate every object against the
    /// Kubernetes schemas, offline.
    Manifests {
        /// Fail when deploy/kubernetes differs from the chart's rendering instead of writing it.
        #[arg(long)]
        check: bool,
    },
    /// Soak: a real HTTPS client (response checksums, kept-alive connections, more held open)
    /// through the release agent with the shipped packs, compared with a run without the
    /// agent; fails on any difference, missing line, loss counter above 0, or agent RSS growth
    /// over 10% after warm-up. Needs root. Prints a table of figures.
    Soak {
        /// Calls the worker connections make.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Worker connections (kept alive, one thread each).
        #[arg(long, default_value_t = 4)]
        connections: u32,
        /// Connections held open, idle, for the first half of the run.
        #[arg(long, default_value_t = 1000)]
        held: u32,
        /// Use the development build of the agent instead of building a release one.
        #[arg(long)]
        debug: bool,
    },
    /// Benchmark: wrk → nginx over TLS on loopback (pinned to one CPU each) with no tracer,
    /// empty uprobes (the floor), bcc's sslsniff (when it runs here), a bpftrace script, and the
    /// agent on wrk with no packs, `core`, and every shipped pack, interleaved in rounds.
    /// Prints requests/s and ratios, CPU per request, loss against wrk's count and p99 latency,
    /// for a small and a 64 KiB JSON response, and writes docs/BENCHMARKS.md. Needs root.
    Bench {
        /// Seconds of load per configuration and round.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rounds (each configuration once per round); the figures are medians.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// wrk's connections (one thread, kept alive).
        #[arg(long, default_value_t = 8)]
        connections: u32,
        /// Use the development build of the agent instead of building a release one.
        #[arg(long)]
        debug: bool,
        /// A smoke run: one round of 2 s steps, only no tracer, the floor and the agent without
        /// packs, small responses; prints the table, writes nothing, fails if the agent lost an
        /// exchange.
        #[arg(long)]
        quick: bool,
        /// The responses nginx answers with, each a phase of its own: `small` (66 B of JSON),
        /// `large` (64 KiB of JSON contacts). docs/BENCHMARKS.md is written only when both run.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [bench::Response::Small, bench::Response::Large])]
        response: Vec<bench::Response>,
    },
    /// Run every test: formatting, lints, the Kubernetes manifests, unit tests, pack tests, a short
    /// fuzz run, end-to-end tests with the real eBPF programs, the soak's short form and the
    /// benchmark's smoke run (needs root).
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
        Command::Setup { build_only } => setup::ensure_with(build_only),
        Command::BuildPacks => {
            // Building needs only the build tools, not the tests' (the Containerfile's build
            // stage runs this).
            setup::ensure_with(true)?;
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
        Command::Image {
            prebuilt,
            release,
            tag,
        } => {
            setup::ensure()?;
            image::run_image(&root, prebuilt, release, &tag)
        }
        Command::Manifests { check } => {
            setup::ensure()?;
            manifests::run_manifests(&root, check)
        }
        Command::Soak {
            requests,
            connections,
            held,
            debug,
        } => {
            setup::ensure()?;
            soak::run(
                &root,
                &soak::Options {
                    requests,
                    connections,
                    held,
                    debug,
                },
            )
        }
        Command::Bench {
            seconds,
            rounds,
            connections,
            debug,
            quick,
            response,
        } => {
            setup::ensure()?;
            bench::run(
                &root,
                bench::Options {
                    seconds,
                    rounds,
                    connections,
                    debug,
                    quick,
                    responses: response,
                },
            )
        }
        Command::Test { no_lint, filter } => test::run(&root, no_lint, filter.as_deref()),
    }
}
