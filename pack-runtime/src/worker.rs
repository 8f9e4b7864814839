//! A worker: one instance of every pack, used by one thread. Hooks are called through a
//! [`Session`](crate::Session), which holds their order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use extism::{CompiledPlugin, Plugin};
use serde_json::Value;

use crate::input::{InputParts, RequestView, ResponseView, body_value, write_input};
use crate::manifest::Method;
use crate::output::{HookOutput, parse_output};
use crate::shared::Shared;
use crate::state::RequestState;
use crate::stats::FailureKind;

/// One pack's compiled plugin (in an engine of this worker's own) and its live instance.
struct Slot {
    compiled: CompiledPlugin,
    /// `None` until first used, and again after a failure (re-created on the next call).
    plugin: Option<Plugin>,
}

/// Runs hooks for one thread. Hooks never return errors for a pack's misbehaviour: a failing
/// pack is counted, logged (rate-limited), its instance re-created, and the other packs go on.
pub struct Worker {
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    /// The input document, reused between calls.
    buf: Vec<u8>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("packs", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// The parts of a call that differ between hooks.
#[derive(Clone, Copy)]
struct Hook<'a> {
    method: Method,
    request: &'a RequestView<'a>,
    response: Option<&'a ResponseView<'a>>,
    response_body: Option<&'a Value>,
    chunk: Option<&'a [u8]>,
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>, compiled: Vec<CompiledPlugin>) -> Self {
        let slots = compiled
            .into_iter()
            .map(|compiled| Slot {
                compiled,
                plugin: None,
            })
            .collect();
        Self {
            shared,
            slots,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Calls every pack's `pre` hook: the request is complete.
    pub(crate) fn pre(&mut self, state: &mut RequestState, request: &RequestView) {
        self.run(
            state,
            Hook {
                method: Method::Pre,
                request,
                response: None,
                response_body: None,
                chunk: None,
            },
        );
    }

    /// Calls every pack's `chunk` hook with one piece of (decoded) response body, or, with
    /// `None`, the closing call that marks the end of the body. Pieces go only to packs with
    /// the body permission; the closing call goes to every pack that has `chunk`.
    pub(crate) fn chunk(
        &mut self,
        state: &mut RequestState,
        request: &RequestView,
        response: &ResponseView,
        piece: Option<&[u8]>,
    ) {
        if state.chunks_closed || state.posted {
            return;
        }
        if piece.is_none() {
            state.chunks_closed = true;
        }
        self.run(
            state,
            Hook {
                method: Method::Chunk,
                request,
                response: Some(response),
                response_body: None,
                chunk: piece,
            },
        );
    }

    /// Calls every pack's `post` hook: the response is complete. Makes the closing `chunk`
    /// call first if it has not been made, so chunks always come before `post`.
    pub(crate) fn post(
        &mut self,
        state: &mut RequestState,
        request: &RequestView,
        response: &ResponseView,
    ) {
        if state.posted {
            return;
        }
        if !state.chunks_closed {
            self.chunk(state, request, response, None);
        }
        state.posted = true;
        let needs_body = self.shared.defs.iter().any(|d| {
            d.calls(Method::Post) && d.info.permissions.body && d.domains.matches(request.domain)
        });
        let body = match response.body {
            Some(b) if needs_body => Some(body_value(b)),
            _ => None,
        };
        self.run(
            state,
            Hook {
                method: Method::Post,
                request,
                response: Some(response),
                response_body: body.as_ref(),
                chunk: None,
            },
        );
    }

    fn run(&mut self, state: &mut RequestState, hook: Hook<'_>) {
        for index in 0..self.slots.len() {
            let def = &self.shared.defs[index];
            if !def.calls(hook.method) {
                continue;
            }
            if !def.domains.matches(hook.request.domain) {
                self.shared.counters[index]
                    .skipped_domain
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // A chunk piece is body: only packs allowed to see bodies get it.
            if hook.method == Method::Chunk && hook.chunk.is_some() && !def.info.permissions.body {
                continue;
            }
            if def.info.permissions.body && state.request_body.is_none() {
                state.request_body = hook.request.body.map(body_value);
            }
            if let Some(out) = self.call(index, state, hook) {
                let name = &self.shared.defs[index].info.name;
                for (key, value) in out.captures {
                    state.capture(format!("{name}/{key}"), value);
                }
                if let Some(context) = out.context {
                    state.set_context(index, context);
                }
            }
        }
    }

    /// Makes one call; `None` when the pack failed (already counted and logged).
    fn call(&mut self, index: usize, state: &RequestState, hook: Hook<'_>) -> Option<HookOutput> {
        let def = &self.shared.defs[index];
        let counters = &self.shared.counters[index];
        let body = def.info.permissions.body;
        let empty = Value::Object(serde_json::Map::new());
        let parts = InputParts {
            request_id: state.request_id(),
            request: hook.request,
            request_body: if body {
                state.request_body.as_ref()
            } else {
                None
            },
            response: hook
                .response
                .map(|r| (r, if body { hook.response_body } else { None })),
            chunk: hook.chunk,
            context: state.context(index).unwrap_or(&empty),
            environment: def.environment.as_ref(),
            configuration: &def.info.configuration,
        };
        if let Err(e) = write_input(&mut self.buf, &parts) {
            // Only reachable with a non-string map key, which the views cannot hold.
            tracing::error!(pack = %def.info.id, error = %e, "cannot build hook input");
            return None;
        }
        counters.calls.fetch_add(1, Ordering::Relaxed);
        let slot = &mut self.slots[index];
        if slot.plugin.is_none() {
            match Plugin::new_from_compiled(&slot.compiled) {
                Ok(p) => slot.plugin = Some(p),
                Err(e) => {
                    counters.fail(
                        &def.info.id,
                        hook.method.export(),
                        FailureKind::Instantiate,
                        &format!("{e:#}"),
                    );
                    return None;
                }
            }
        }
        let plugin = slot.plugin.as_mut()?;
        let result = match plugin.call::<&[u8], &[u8]>(hook.method.export(), &self.buf) {
            Ok(out) if out.len() > def.info.limits.max_output_bytes => Err((
                FailureKind::OutputTooLarge,
                format!(
                    "output of {} bytes exceeds the cap of {}",
                    out.len(),
                    def.info.limits.max_output_bytes
                ),
                true,
            )),
            Ok(out) => {
                parse_output(out).map_err(|e| (FailureKind::InvalidOutput, e.to_string(), false))
            }
            Err(e) => Err((classify(&e), format!("{e:#}"), true)),
        };
        match result {
            Ok(out) => Some(out),
            Err((kind, message, drop_instance)) => {
                counters.fail(&def.info.id, hook.method.export(), kind, &message);
                if drop_instance {
                    slot.plugin = None;
                    counters.instances_recreated.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
        }
    }
}

/// Tells the kind of a failed Extism call from its error.
fn classify(e: &extism::Error) -> FailureKind {
    let root = e.root_cause().to_string();
    match root.as_str() {
        "timeout" => return FailureKind::Timeout,
        "oom" => return FailureKind::OutOfMemory,
        "plugin ran out of fuel" => return FailureKind::Fuel,
        _ => {}
    }
    let full = format!("{e:?}");
    if full.contains("Returned non-zero exit code") {
        FailureKind::PackError
    } else if full.contains("wasm trap")
        || full.contains("wasm backtrace")
        || full.contains("error while executing")
    {
        FailureKind::Trap
    } else {
        FailureKind::PackError
    }
}
