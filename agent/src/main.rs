//! The `taskless-agent` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use taskless_agent::{
    check,
    cli::{Command, PackCommand},
    pack_cmd, replay, run, settings,
};

fn main() -> ExitCode {
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
