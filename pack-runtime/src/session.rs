//! One exchange's pass through the packs, in the only order packs are promised.

use crate::input::{RequestView, ResponseView};
use crate::output::{Dimension, OutputLine};
use crate::state::RequestState;
use crate::worker::Worker;

/// The hooks of one exchange, in order: `pre` when the session starts (the request is
/// complete), a `chunk` per piece of response body, the closing `chunk` when the body ends, and
/// `post` when the response is complete. `pre` cannot be skipped (it is the constructor); a
/// piece after the closing `chunk`, a second closing `chunk` or a second `post` is not passed
/// on; `post` makes the closing `chunk` first if it was not made.
///
/// A worker serves many sessions at once (exchanges interleave on a connection and across
/// connections); each call takes the worker whose instances run the hooks. Call every hook of
/// one session on the same worker (or at least on workers of the same
/// [`PackSet`](crate::PackSet)).
#[derive(Debug, Clone)]
pub struct Session {
    state: RequestState,
}

impl Session {
    /// Starts an exchange with a fresh request id (a UUIDv7 as 32 lower-case hex digits) and
    /// calls every pack's `pre`.
    pub fn start(worker: &mut Worker, request: &RequestView<'_>) -> Self {
        Self::start_with_state(worker, request, RequestState::new())
    }

    /// [`Session::start`] with a given request id (tests, reproducible runs).
    pub fn start_with_request_id(
        worker: &mut Worker,
        request: &RequestView<'_>,
        request_id: String,
    ) -> Self {
        Self::start_with_state(worker, request, RequestState::with_request_id(request_id))
    }

    fn start_with_state(
        worker: &mut Worker,
        request: &RequestView<'_>,
        mut state: RequestState,
    ) -> Self {
        worker.pre(&mut state, request);
        Self { state }
    }

    /// [`Session::start`], skipping first the costliest packs as [`Session::shed`] does when
    /// `keep_share` is given: for a worker that has fallen behind.
    pub fn start_shedding(
        worker: &mut Worker,
        request: &RequestView<'_>,
        keep_share: Option<f64>,
    ) -> Self {
        let mut state = RequestState::new();
        if let Some(keep) = keep_share {
            worker.shed(&mut state, request, keep);
        }
        Self::start_with_state(worker, request, state)
    }

    /// Skips packs for the rest of this exchange (they get no further hook calls and the line
    /// names them in `skipped`): the costliest of those that would run on `request` (by
    /// `worker`'s recent time per call), until the ones left cost at most `keep_share` of what
    /// they all cost; with `keep_share` 0, every pack. For a worker that has fallen behind:
    /// it sheds a pack, never the exchange. Counted per pack (`skipped_shed`). Gives how many
    /// packs were newly skipped.
    pub fn shed(&mut self, worker: &Worker, request: &RequestView<'_>, keep_share: f64) -> usize {
        worker.shed(&mut self.state, request, keep_share)
    }

    /// The names of the packs skipped so far by [`Session::shed`].
    #[must_use]
    pub fn skipped(&self) -> &[String] {
        self.state.skipped()
    }

    /// The id packs see as `requestId`.
    #[must_use]
    pub fn request_id(&self) -> &str {
        self.state.request_id()
    }

    /// What the packs captured so far.
    #[must_use]
    pub fn dimensions(&self) -> &[Dimension] {
        self.state.dimensions()
    }

    /// What pack number `index` (its position in [`PackSet::packs`](crate::PackSet::packs))
    /// last returned as its context, if anything.
    #[must_use]
    pub fn context(&self, index: usize) -> Option<&serde_json::Value> {
        self.state.context(index)
    }

    /// One piece of (decoded) response body: every pack's `chunk` that may see bodies. Ignored
    /// once the body has ended.
    pub fn chunk(
        &mut self,
        worker: &mut Worker,
        request: &RequestView<'_>,
        response: &ResponseView<'_>,
        piece: &[u8],
    ) {
        worker.chunk(&mut self.state, request, response, Some(piece));
    }

    /// The body has ended: the closing `chunk` call, made once (later calls do nothing).
    pub fn end_of_body(
        &mut self,
        worker: &mut Worker,
        request: &RequestView<'_>,
        response: &ResponseView<'_>,
    ) {
        worker.chunk(&mut self.state, request, response, None);
    }

    /// The response is complete: `post`, made once, after the closing `chunk` (made first if
    /// it was not). Later calls, and `chunk` calls after it, do nothing.
    pub fn post(
        &mut self,
        worker: &mut Worker,
        request: &RequestView<'_>,
        response: &ResponseView<'_>,
    ) {
        worker.post(&mut self.state, request, response);
    }

    /// [`Session::post`], then the captures.
    pub fn finish(
        mut self,
        worker: &mut Worker,
        request: &RequestView<'_>,
        response: &ResponseView<'_>,
    ) -> OutputLine {
        self.post(worker, request, response);
        self.into_line()
    }

    /// What the packs captured: after [`Session::post`], or without it for an exchange that
    /// will not complete (its connection ended without a response, or the agent is stopping).
    #[must_use]
    pub fn into_line(self) -> OutputLine {
        self.state.into_line()
    }
}
