//! `taskless-testapi`: the local HTTPS API used by `cargo xtask demo` and the end-to-end tests.
use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;

/// A local HTTPS API that answers like a small payments API and a chat-completions API.
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the CA certificate (PEM) clients should trust.
    #[arg(long)]
    ca_file: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = taskless_e2e::server::start(args.listen, &args.ca_file).await?;
    server.open_gate();
    println!("listening {}", server.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
