//! The `taskless-agent` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use taskless_agent::{
    check,
    cli::{Command, PackCommand},
    pack_cmd, replay, run, settings,
};

/// Extism asks its wasmtime store for fuel after every pack call; without a fuel limit that
/// makes an error, and errors capture a backtrace whenever `RUST_BACKTRACE` is set: about 6 µs
/// per call, more than the call itself (docs/packs.md). So library backtraces are off unless
/// `RUST_LIB_BACKTRACE` asks for them; panics still follow `RUST_BACKTRACE`.
fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the first thing `main` does, while no other thread exists to read the
        // environment.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

fn main() -> ExitCode {
    quiet_library_backtraces();
    let cli = match settings::parse() {
        Ok(cli) => cli,
        Err(settings::SettingsError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!(
            "warning: invalid --log filter {:?} ({e}); using info",
            cli.log
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match cli.command {
        Some(Command::Pack(PackCommand::Check {
            fixture,
            manifest,
            wasm,
        })) => pack_cmd::check(&fixture, &manifest, &wasm),
        Some(Command::Pack(PackCommand::List { dir })) => pack_cmd::list(&dir),
        Some(Command::Check(args)) => check::check(&args.pack.config()),
        Some(Command::Replay(args)) => match replay::replay(&args.config()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        None => match run::run(&cli.run.config()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
