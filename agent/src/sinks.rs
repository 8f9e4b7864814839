//! Where finished records go. Taskless NDJSON on stdout first: one line per exchange, flushed
//! as soon as the writer has nothing else queued, so a reader sees each exchange promptly.

use std::{
    io::{BufWriter, Write as _},
    thread::JoinHandle,
};

use crossbeam_channel::{Receiver, Sender};

/// Lines queued for the writer before pack workers wait for it.
pub const QUEUE: usize = 8192;

/// Starts the stdout writer; it ends when every sender is dropped.
///
/// # Errors
/// When the thread cannot be started.
pub fn stdout() -> std::io::Result<(Sender<String>, JoinHandle<()>)> {
    let (tx, rx): (Sender<String>, Receiver<String>) = crossbeam_channel::bounded(QUEUE);
    let handle = std::thread::Builder::new()
        .name("sink-stdout".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            while let Ok(line) = rx.recv() {
                if writeln!(out, "{line}").is_err() {
                    tracing::error!("stdout closed; output lines are being lost");
                    break;
                }
                if rx.is_empty() && out.flush().is_err() {
                    break;
                }
            }
            let _ = out.flush();
        })?;
    Ok((tx, handle))
}
