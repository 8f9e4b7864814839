//! A worker: one instance of every pack, used by one thread. Hooks are called through a
//! [`Session`](crate::Session), which holds their order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use extism::{CompiledPlugin, Plugin};
use serde_json::Value;

use crate::input::{BodyJson, InputParts, RequestView, ResponseView, write_input};
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
    /// The instance in `plugin` has been given the pack's configuration and kept its memory
    /// since (for packs with `configurationOnce`); meaningless while `plugin` is `None`, and a
    /// new instance is given it on its first call.
    configured: bool,
}

/// Runs hooks for one thread. Hooks never return errors for a pack's misbehaviour: a failing
/// pack is counted, logged (rate-limited), its instance re-created, and the other packs go on.
pub struct Worker {
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    /// The input document, reused between calls.
    buf: Vec<u8>,
    /// Per pack: this worker's moving average of the time one call takes, in nanoseconds
    /// (0 until the pack is first called). What [`Session::shed`](crate::Session::shed) ranks
    /// packs by.
    costs: Vec<u64>,
    /// Wall time spent running packs (building their inputs, calling them, reading their
    /// outputs) since [`Worker::take_busy`] last took it.
    busy: Duration,
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
    response_body: Option<&'a BodyJson<'a>>,
    chunk: Option<&'a [u8]>,
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>, compiled: Vec<CompiledPlugin>) -> Self {
        let costs = vec![0; compiled.len()];
        let slots = compiled
            .into_iter()
            .map(|compiled| Slot {
                compiled,
                plugin: None,
                configured: false,
            })
            .collect();
        Self {
            shared,
            slots,
            buf: Vec::with_capacity(4096),
            costs,
            busy: Duration::ZERO,
        }
    }

    /// The wall time this worker spent running packs since the last call (at first, since it
    /// was made): what shedding packs can save, unlike the caller's own work around them.
    pub fn take_busy(&mut self) -> Duration {
        std::mem::take(&mut self.busy)
    }

    /// How long one call of pack number `index` takes on this worker: a moving average over
    /// its recent calls, `None` before its first call.
    #[must_use]
    pub fn cost(&self, index: usize) -> Option<Duration> {
        self.costs
            .get(index)
            .filter(|c| **c > 0)
            .map(|c| Duration::from_nanos(*c))
    }

    /// Skips the costliest packs that would run on `request` for the rest of this request,
    /// until the packs left cost at most `keep_share` of what they all cost (0: skip them
    /// all). Gives how many packs were newly skipped.
    pub(crate) fn shed(
        &self,
        state: &mut RequestState,
        request: &RequestView<'_>,
        keep_share: f64,
    ) -> usize {
        // Packs with a hook still to come on this request: skipping one that is done with it
        // would save nothing.
        let pending = |i: usize| {
            let def = &self.shared.defs[i];
            (!state.pre_done && def.has_pre)
                || (!state.posted && (def.has_post || (def.has_chunk && !state.chunks_closed)))
        };
        #[allow(clippy::cast_precision_loss)] // nanoseconds: precision far beyond what matters
        let cost = |i: usize| self.costs[i] as f64;
        let matching = |i: &usize| self.shared.defs[*i].domains.matches(request.domain);
        let mut running: Vec<(usize, f64)> = (0..self.slots.len())
            .filter(matching)
            .filter(|&i| !state.is_shed(i) && pending(i))
            .map(|i| (i, cost(i)))
            .collect();
        // The share is of what every pack would cost the exchange, those already shed
        // included: shedding again at the same share sheds nothing more.
        let shed_before: f64 = (0..self.slots.len())
            .filter(matching)
            .filter(|&i| state.is_shed(i))
            .map(cost)
            .sum();
        let mut kept: f64 = running.iter().map(|(_, c)| c).sum();
        let allowed = (kept + shed_before) * keep_share.clamp(0.0, 1.0);
        running.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut newly = 0;
        for (index, cost) in running {
            // With nothing allowed every pack goes, measured or not.
            if keep_share > 0.0 && kept <= allowed {
                break;
            }
            if state.shed(index, &self.shared.defs[index].info.name) {
                self.shared.counters[index]
                    .skipped_shed
                    .fetch_add(1, Ordering::Relaxed);
                newly += 1;
            }
            kept -= cost;
        }
        newly
    }

    /// Calls every pack's `pre` hook: the request is complete.
    pub(crate) fn pre(&mut self, state: &mut RequestState, request: &RequestView) {
        state.pre_done = true;
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
        let needs_body = self.shared.defs.iter().enumerate().any(|(i, d)| {
            d.calls(Method::Post)
                && d.gets_response_body(response.status)
                && !state.is_shed(i)
                && d.domains.matches(request.domain)
        });
        let started = Instant::now();
        let body = match response.body {
            Some(b) if needs_body => Some(BodyJson::new(b)),
            _ => None,
        };
        self.busy += started.elapsed();
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
        let started = Instant::now();
        // Checked once per hook, and only when a pack that may see bodies is called.
        let mut request_body: Option<Option<BodyJson<'_>>> = None;
        for index in 0..self.slots.len() {
            let def = &self.shared.defs[index];
            if !def.calls(hook.method) || state.is_shed(index) {
                continue;
            }
            if !def.domains.matches(hook.request.domain) {
                self.shared.counters[index]
                    .skipped_domain
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let status = hook.response.map(|r| r.status);
            // A chunk piece is body: only packs given the response body get it.
            if hook.method == Method::Chunk
                && hook.chunk.is_some()
                && !status.is_some_and(|s| def.gets_response_body(s))
            {
                continue;
            }
            let body = if def.gets_request_body(status) {
                request_body
                    .get_or_insert_with(|| hook.request.body.map(BodyJson::new))
                    .as_ref()
            } else {
                None
            };
            if let Some(out) = self.call(index, state, hook, body) {
                let name = &self.shared.defs[index].info.name;
                for (key, value) in out.captures {
                    state.capture(format!("{name}/{key}"), value);
                }
                if let Some(context) = out.context {
                    state.set_context(index, context);
                }
            }
        }
        self.busy += started.elapsed();
    }

    /// Makes one call; `None` when the pack failed (already counted and logged).
    fn call(
        &mut self,
        index: usize,
        state: &RequestState,
        hook: Hook<'_>,
        request_body: Option<&BodyJson<'_>>,
    ) -> Option<HookOutput> {
        let def = &self.shared.defs[index];
        let counters = &self.shared.counters[index];
        let body = hook
            .response
            .is_some_and(|r| def.gets_response_body(r.status));
        let empty = Value::Object(serde_json::Map::new());
        let configured = {
            let slot = &self.slots[index];
            def.info.configuration_once && slot.configured && slot.plugin.is_some()
        };
        let parts = InputParts {
            request_id: state.request_id(),
            request: hook.request,
            request_body,
            response: hook
                .response
                .map(|r| (r, if body { hook.response_body } else { None })),
            chunk: hook.chunk,
            context: state.context(index).unwrap_or(&empty),
            environment: def.environment_json.as_deref(),
            configuration: (!configured).then_some(&*def.configuration_json),
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
        let started = Instant::now();
        let called = plugin.call::<&[u8], &[u8]>(hook.method.export(), &self.buf);
        let elapsed = started.elapsed();
        counters.call_time.record(elapsed);
        let took = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let cost = &mut self.costs[index];
        // A moving average over about the last eight calls.
        *cost = if *cost == 0 {
            took.max(1)
        } else {
            (*cost - *cost / 8).saturating_add(took / 8).max(1)
        };
        let result = match called {
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
        // The instance read its input (the configuration with it) unless it is dropped now.
        slot.configured = true;
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
