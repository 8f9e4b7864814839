//! The sink stage: where finished exchanges go.
//!
//! Takes: the pack stage's [`FinishedExchange`]s through a bounded queue. Gives: each to every
//! configured [`Sink`], on one thread, each sink formatting it for itself (NDJSON today).
//! Sinks are flushed whenever the queue is empty, so a reader sees each exchange promptly.

mod ndjson;

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

pub use ndjson::{NdjsonSink, to_line};

use crate::packs::FinishedExchange;

/// Exchanges queued for the sink thread before pack workers wait for it.
pub const QUEUE: usize = 8192;

/// Somewhere finished exchanges go.
pub trait Sink: Send {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Writes one exchange.
    ///
    /// # Errors
    /// When the destination is gone; the sink is then dropped (and the loss logged).
    fn write(&mut self, exchange: &FinishedExchange) -> std::io::Result<()>;
    /// Makes what was written visible.
    ///
    /// # Errors
    /// As [`Sink::write`].
    fn flush(&mut self) -> std::io::Result<()>;
}

/// Starts the sink thread over `sinks`; it ends when every sender is dropped.
///
/// # Errors
/// When the thread cannot be started.
pub fn start(
    mut sinks: Vec<Box<dyn Sink>>,
) -> std::io::Result<(Sender<FinishedExchange>, JoinHandle<()>)> {
    let (tx, rx): (Sender<FinishedExchange>, Receiver<FinishedExchange>) =
        crossbeam_channel::bounded(QUEUE);
    let handle = std::thread::Builder::new()
        .name("sinks".into())
        .spawn(move || {
            while let Ok(exchange) = rx.recv() {
                sinks.retain_mut(|sink| {
                    let ok =
                        sink.write(&exchange).is_ok() && (!rx.is_empty() || sink.flush().is_ok());
                    if !ok {
                        tracing::error!(
                            sink = sink.name(),
                            "output closed; its exchanges are being lost"
                        );
                    }
                    ok
                });
            }
            for sink in &mut sinks {
                let _ = sink.flush();
            }
        })?;
    Ok((tx, handle))
}
