use std::{
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use clap::Parser as _;
use taskless_agent::{capture, cli::Cli, discovery, probes};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .init();
    let mut p = match probes::Probes::load(probes::LoadOptions { trace_all: false, ringbuf_bytes: cli.run.ringbuf_size }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for pid in &cli.run.pids {
        let libs = match discovery::find_tls_libraries(*pid) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        for lib in libs {
            match p.attach(*pid, &lib) {
                Ok(n) => tracing::info!(pid, path = %lib.path.display(), probes = n, "attached"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let ring = p.take_ring().unwrap();
    let stop = AtomicBool::new(false);
    let stats = Arc::new(capture::CaptureStats::default());
    capture::run(ring, &stop, &stats, |r| {
        if let capture::Record::Data(d) = &r {
            println!("{:?} conn={:x} off={} total={} {:?}", d.direction, d.conn, d.offset, d.total_len, String::from_utf8_lossy(&d.payload[..d.payload.len().min(200)]));
        } else {
            println!("{r:?}");
        }
    }, || {});
    ExitCode::SUCCESS
}
