//! How many heap allocations parsing costs: heads and body pieces share per-connection chunks,
//! so an exchange costs well under one allocation, and none when its events are dropped before
//! the next chunk is needed (the arena takes its previous chunk back).
//!
//! A counting allocator wraps the system one; this file holds a single test so that nothing else
//! allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use taskless_http::{Config, Connection, Event, Flow};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made while `f` runs.
fn count(f: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    f();
    COUNTING.store(false, Ordering::Relaxed);
    ALLOCATIONS.load(Ordering::Relaxed)
}

const EXCHANGES: usize = 200;

fn request() -> Vec<u8> {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let mut r = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: t/1\r\n\
         Authorization: Bearer sk-0123456789\r\nContent-Type: application/json\r\n\
         Accept: */*\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn response() -> Vec<u8> {
    let body = [b'x'; 480];
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nDate: Tue, 24 Nov 2026 12:00:00 GMT\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: keep-alive\r\nx-request-id: req_1\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(&body);
    r
}

#[test]
fn exchanges_share_chunks_and_reuse_them_once_events_are_dropped() {
    let (req, resp) = (request(), response());

    // Every event kept: the heads, field tables and bodies of several exchanges share a chunk.
    let mut conn = Connection::new(Config::default());
    let mut events = Vec::with_capacity(8 * EXCHANGES);
    let kept = count(|| {
        for i in 0..EXCHANGES as u64 {
            conn.feed(Flow::Egress, &req, 2 * i, &mut events);
            conn.feed(Flow::Ingress, &resp, 2 * i + 1, &mut events);
        }
    });
    let ends = events
        .iter()
        .filter(|e| matches!(e, Event::ResponseEnd { .. }))
        .count();
    assert_eq!(ends, EXCHANGES);
    // About one new chunk (and its shared header) per five exchanges of this size.
    assert!(
        kept <= EXCHANGES / 2,
        "{kept} allocations for {EXCHANGES} exchanges whose events were kept"
    );
    drop(events);

    // Events dropped as they come: the arena reuses its chunk, nothing is allocated per exchange.
    let mut events = Vec::with_capacity(16);
    let dropped = count(|| {
        for i in 0..EXCHANGES as u64 {
            conn.feed(Flow::Egress, &req, 1000 + 2 * i, &mut events);
            conn.feed(Flow::Ingress, &resp, 1001 + 2 * i, &mut events);
            events.clear();
        }
    });
    assert!(
        dropped == 0,
        "{dropped} allocations for {EXCHANGES} exchanges whose events were dropped"
    );
}
