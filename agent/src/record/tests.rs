use std::{
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
};

use taskless_http::Flow;

use super::*;
use crate::{
    capture::{DataRecord, Record},
    flows::{FlowStats, Flows, Identity, Moment},
};

fn data(conn: u64, t: u64, direction: Flow, payload: &[u8]) -> Record {
    Record::Data(DataRecord {
        tgid: std::process::id(),
        tid: 1,
        conn,
        timestamp_ns: t,
        // Recordings keep bytes and timing, not socket identity: an unknown fd on both sides.
        fd: -1,
        fd_fallback: false,
        direction,
        offset: 0,
        total_len: u32::try_from(payload.len()).unwrap(),
        truncated: false,
        read_failed: false,
        lost_before: false,
        payload: payload.to_vec(),
    })
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("taskless-record-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn entries_round_trip_through_json() {
    let entries = [
        Entry::Data {
            t: 5,
            dir: Flow::Egress,
            data: b"GET / HTTP/1.1\r\n\r\n\x00\xff".to_vec(),
        },
        Entry::Gap {
            t: 6,
            dir: Flow::Ingress,
            len: 70_000,
        },
        Entry::Identity {
            t: 7,
            source: Identity {
                pid: 42,
                process: "curl".into(),
                serial: 3,
                fd: Some(5),
                local_address: Some("127.0.0.1:46498".parse().unwrap()),
                remote_address: Some("[::1]:8443".parse().unwrap()),
                server_name: Some("api.example.test".into()),
                cgroup: Some("/system.slice/x.scope".into()),
                container_id: None,
                role: None,
                k8s: None,
            },
        },
        Entry::Identity {
            t: 7,
            source: Identity {
                serial: 4,
                ..Identity::default()
            },
        },
        Entry::Close { t: 8 },
        Entry::Lost { t: 9 },
    ];
    for e in entries {
        let text = e.to_json();
        assert_eq!(Entry::from_json(&text), Ok(e.clone()), "{text}");
    }
    assert_eq!(
        Entry::Data {
            t: 1,
            dir: Flow::Ingress,
            data: b"hi".to_vec()
        }
        .to_json(),
        r#"{"t":1,"dir":"ingress","data":"aGk="}"#
    );
    assert_eq!(
        Entry::Identity {
            t: 2,
            source: Identity {
                serial: 1,
                fd: Some(4),
                remote_address: Some("[::1]:443".parse().unwrap()),
                ..Identity::default()
            }
        }
        .to_json(),
        r#"{"t":2,"source":{"pid":0,"connection":1,"fd":4,"remoteAddress":"[::1]:443"}}"#
    );
    assert_eq!(Entry::Lost { t: 3 }.to_json(), r#"{"t":3,"lost":true}"#);
    assert!(Entry::from_json(r#"{"t":3,"lost":true,"close":true}"#).is_err());
    // A record that follows lost ones is stored as the loss, then its bytes; the loss plays
    // back as an empty record that says so.
    let Record::Data(mut d) = data(0x10, 1, Flow::Egress, b"GET / HTTP/1.1\r\n\r\n") else {
        unreachable!()
    };
    d.lost_before = true;
    let record = Record::Data(d);
    let stored = Entry::from_record(&record);
    assert!(
        matches!(stored[..], [Entry::Lost { t: 1 }, Entry::Data { .. }]),
        "{stored:?}"
    );
    let Some(Record::Data(played)) = stored[0].to_record(7, 0x10) else {
        panic!("a data record");
    };
    assert!(played.lost_before && played.payload.is_empty());
}

#[test]
fn malformed_lines_are_refused() {
    assert!(Entry::from_json(r#"{"t":1,"dir":"egress"}"#).is_err());
    assert!(Entry::from_json(r#"{"t":1,"dir":"egress","data":"!!","gap":2}"#).is_err());
    assert!(Entry::from_json(r#"{"t":1,"dir":"sideways","data":""}"#).is_err());
    assert!(Entry::from_json(r#"{"t":1,"dir":"egress","data":"***"}"#).is_err());
    assert!(Entry::from_json(r#"{"t":1,"close":false}"#).is_err());
    assert!(
        Entry::from_json(r#"{"t":1,"dir":"egress","data":"","source":{"connection":1}}"#).is_err()
    );
    assert!(Entry::from_json(r#"{"t":1,"source":{"fd":3}}"#).is_err());
    assert!(
        Entry::from_json(r#"{"t":1,"source":{"connection":1,"remoteAddress":"nowhere"}}"#).is_err()
    );
}

#[test]
fn partial_calls_are_stored_as_gaps_of_the_size_flows_reports() {
    let Record::Data(mut d) = data(9, 10, Flow::Ingress, b"abc") else {
        unreachable!()
    };
    d.truncated = true;
    d.total_len = 2_000_000;
    let entries = Entry::from_record(&Record::Data(d.clone()));
    assert_eq!(
        entries,
        vec![
            Entry::Data {
                t: 10,
                dir: Flow::Ingress,
                data: b"abc".to_vec()
            },
            Entry::Gap {
                t: 10,
                dir: Flow::Ingress,
                len: 2_000_000 - 3
            }
        ]
    );
    d.read_failed = true;
    d.truncated = false;
    d.payload.clear();
    d.total_len = 100;
    assert_eq!(
        Entry::from_record(&Record::Data(d)),
        vec![Entry::Gap {
            t: 10,
            dir: Flow::Ingress,
            len: 100
        }]
    );
}

/// The key of a job's connection (its serial in the flows stage that made it).
const fn job_conn(job: &Moment) -> u64 {
    match job {
        Moment::Request { key, .. }
        | Moment::ResponseHead { key, .. }
        | Moment::ResponseBody { key, .. }
        | Moment::Complete { key, .. }
        | Moment::Incomplete { key, .. } => key.conn,
    }
}

/// Moments as text, per connection in the order they came (connections left open at the end are
/// closed in no particular order live).
type MomentsByConn = std::collections::BTreeMap<u64, Vec<String>>;

fn by_conn(jobs: &[Moment]) -> MomentsByConn {
    let mut out = MomentsByConn::new();
    for j in jobs {
        out.entry(job_conn(j)).or_default().push(format!("{j:?}"));
    }
    out
}

/// The live path with `--record`: each record goes through the flows stage, then to the
/// recorder with what the flows stage then knows about its connection (as `run.rs` does).
/// Open connections are closed at `end_ns`, as at exit.
fn live_run(dir: &Path, max_open: usize, records: &[Record], end_ns: u64) -> (Vec<Moment>, u64) {
    let stats = Arc::new(FlowStats::default());
    let mut flows = Flows::new(taskless_http::Config::default(), false, Arc::clone(&stats));
    let recorder = Recorder::start_with_limit(dir, 1_700_000_000_000_000_000, max_open).unwrap();
    let mut jobs = Vec::new();
    for r in records {
        flows.handle(r.clone(), &mut |j| jobs.push(j));
        recorder.record(r.clone(), &flows);
    }
    flows.close_all(end_ns, &mut |j| jobs.push(j));
    let rstats = Arc::clone(recorder.stats());
    recorder.finish();
    assert_eq!(rstats.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(rstats.failed.load(Ordering::Relaxed), 0);
    (jobs, stats.lost_bytes.load(Ordering::Relaxed))
}

/// `replay DIR` without the pack stage: the recording played through a fresh flows stage.
fn play(rec: &Recording) -> (Vec<Moment>, u64) {
    let stats = Arc::new(FlowStats::default());
    let mut flows = Flows::new(taskless_http::Config::default(), false, Arc::clone(&stats));
    for c in &rec.connections {
        flows.set_process_name(c.meta.pid, c.meta.comm.clone());
    }
    let mut player = Player::new(rec);
    let mut jobs = Vec::new();
    for m in rec.moments() {
        player.step(m, &mut flows, &mut |j| jobs.push(j));
    }
    player.finish(&mut flows, &mut |j| jobs.push(j));
    (jobs, stats.lost_bytes.load(Ordering::Relaxed))
}

/// The metas of the exchanges' complete moments, in order.
fn completed(jobs: &[Moment]) -> Vec<Arc<Identity>> {
    jobs.iter()
        .filter_map(|j| match j {
            Moment::Complete { identity, .. } => Some(Arc::clone(identity)),
            _ => None,
        })
        .collect()
}

/// Writes records of two interleaved connections (one with a lost piece) through the
/// recorder, reads the directory back and checks that the flows stage sees the same thing.
#[test]
fn a_recording_replays_the_records_it_was_given() {
    let dir = temp_dir("roundtrip");
    let req = b"POST /v1/charges HTTP/1.1\r\nHost: api.stripe.com\r\nContent-Length: 3\r\n\r\na=1";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    let mut truncated = data(
        2,
        25,
        Flow::Ingress,
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
    );
    if let Record::Data(d) = &mut truncated {
        d.truncated = true;
        d.total_len += 50;
    }
    let live = vec![
        data(1, 10, Flow::Egress, &req[..20]),
        data(2, 11, Flow::Egress, req),
        data(1, 12, Flow::Egress, &req[20..]),
        data(1, 20, Flow::Ingress, resp),
        truncated,
        Record::Close {
            tgid: std::process::id(),
            conn: 1,
            timestamp_ns: 30,
        },
        // Same key after the close: a new connection and a new file.
        data(1, 40, Flow::Egress, req),
    ];
    // Room for one open file only: every switch of connection closes one and reopens another.
    let (live_jobs, live_lost) = live_run(&dir, 1, &live, 40);

    let rec = Recording::read_dir(&dir).unwrap();
    for c in &rec.connections {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&c.path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", c.path.display());
        assert_eq!(c.meta.version, VERSION);
    }
    assert_eq!(rec.unix_offset_ns(), 1_700_000_000_000_000_000);
    assert_eq!(rec.connections.len(), 3);
    let replayed = rec.records();
    let times: Vec<u64> = replayed
        .iter()
        .map(|r| match r {
            Record::Data(d) => d.timestamp_ns,
            Record::Close { timestamp_ns, .. } | Record::FdClose { timestamp_ns, .. } => {
                *timestamp_ns
            }
            Record::ServerName { .. } | Record::CodeChanged { .. } | Record::Socket { .. } => 0,
        })
        .collect();
    assert_eq!(times, vec![10, 11, 12, 20, 25, 25, 30, 40]);
    for (a, b) in live.iter().zip(&replayed) {
        if let (Record::Data(a), Record::Data(b)) = (a, b) {
            assert_eq!(
                (a.conn, a.direction, &a.payload),
                (b.conn, b.direction, &b.payload)
            );
        }
    }

    let (replay_jobs, replay_lost) = play(&rec);
    assert_eq!(live_lost, 50);
    assert_eq!(replay_lost, live_lost);
    assert!(live_jobs.len() >= 4, "{live_jobs:#?}");
    assert_eq!(by_conn(&replay_jobs), by_conn(&live_jobs));
    let _ = std::fs::remove_dir_all(&dir);
}

const REQ: &[u8] = b"GET /v1/customers/cus_42 HTTP/1.1\r\nHost: api.example.test\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";

fn with_fd(record: Record, fd: i32) -> Record {
    match record {
        Record::Data(mut d) => {
            d.fd = fd;
            Record::Data(d)
        }
        other => other,
    }
}

/// The identity of each connection is recorded as the live flows stage learnt it (the fd and
/// addresses with a later call, the server name after the first bytes, a new connection when
/// the same `SSL *` moves to another socket), and replay gives every exchange that identity.
#[test]
fn replay_gives_each_exchange_the_identity_the_live_run_had() {
    let dir = temp_dir("identity");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let b = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (fd_a, fd_b) = (a.as_raw_fd(), b.as_raw_fd());
    let pid = std::process::id();
    let live = vec![
        // The first bytes come before the fd is known, then a call inside which it is seen.
        data(0x10, 10, Flow::Egress, &REQ[..10]),
        with_fd(data(0x10, 11, Flow::Egress, &REQ[10..]), fd_a),
        with_fd(data(0x10, 12, Flow::Ingress, RESP), fd_a),
        // The server name turns up after the first exchange.
        Record::ServerName {
            tgid: pid,
            conn: 0x10,
            name: "sni.example.test".into(),
        },
        with_fd(data(0x10, 13, Flow::Egress, REQ), fd_a),
        with_fd(data(0x10, 14, Flow::Ingress, RESP), fd_a),
        // The same SSL * on another socket without an SSL_free: a new connection.
        with_fd(data(0x10, 20, Flow::Egress, REQ), fd_b),
        with_fd(data(0x10, 21, Flow::Ingress, RESP), fd_b),
        Record::Close {
            tgid: pid,
            conn: 0x10,
            timestamp_ns: 22,
        },
        // A connection whose fd is never known, still open when the recording stops.
        data(0x20, 30, Flow::Egress, REQ),
        data(0x20, 31, Flow::Ingress, RESP),
        data(0x20, 32, Flow::Egress, &REQ[..5]),
    ];
    let (live_jobs, _) = live_run(&dir, MAX_OPEN, &live, 32);
    let live_metas = completed(&live_jobs);
    assert_eq!(live_metas.len(), 4, "{live_jobs:#?}");
    let (la, lb) = (a.local_addr().ok(), b.local_addr().ok());
    let remote = listener.local_addr().ok();
    let summary: Vec<_> = live_metas
        .iter()
        .map(|m| {
            (
                m.fd,
                m.local_address,
                m.remote_address,
                m.server_name.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Some(fd_a), la, remote, None),
            (Some(fd_a), la, remote, Some("sni.example.test")),
            // The flows stage starts the new connection without the old one's name.
            (Some(fd_b), lb, remote, None),
            (None, None, None, None),
        ]
    );

    let rec = Recording::read_dir(&dir).unwrap();
    // One file per connection of the flows stage: the move to another socket started a file.
    assert_eq!(rec.connections.len(), 3);
    let identities = |i: usize| -> Vec<Identity> {
        rec.connections[i]
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Identity { source, .. } => Some(source.clone()),
                _ => None,
            })
            .collect()
    };
    // fd unknown, then fd and addresses, then the server name: three identity lines.
    let first = identities(0);
    assert_eq!(first.len(), 3, "{first:#?}");
    assert_eq!(first[0].fd, None);
    assert_eq!((first[1].fd, first[1].remote_address), (Some(fd_a), remote));
    assert_eq!(first[2].server_name.as_deref(), Some("sni.example.test"));
    assert_eq!(identities(1).len(), 1);
    assert!(matches!(
        rec.connections[0].entries.last(),
        Some(Entry::Close { t: 20 })
    ));
    assert!(
        rec.connections[2].meta.comm == live_metas[3].process && !live_metas[3].process.is_empty()
    );

    let (replay_jobs, _) = play(&rec);
    assert_eq!(completed(&replay_jobs), live_metas);
    assert_eq!(by_conn(&replay_jobs), by_conn(&live_jobs));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A recording in the first format (no identity lines) still replays: its exchanges get the
/// recorded pid and process name and the replay's own connection serials.
#[test]
fn a_version_1_recording_still_replays() {
    use base64::Engine as _;
    let dir = temp_dir("v1");
    std::fs::create_dir_all(&dir).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let text = format!(
        "{{\"format\":\"taskless-agent-recording\",\"version\":1,\"pid\":4242,\"comm\":\"python3\",\"conn\":\"0x56471ae93f30\",\"unix_offset_ns\":1795515254249439457}}\n\
         {{\"t\":100,\"dir\":\"egress\",\"data\":\"{}\"}}\n\
         {{\"t\":200,\"dir\":\"ingress\",\"data\":\"{}\"}}\n\
         {{\"t\":300,\"close\":true}}\n",
        b64(REQ),
        b64(RESP)
    );
    std::fs::write(dir.join("4242-000056471ae93f30-1.jsonl"), text).unwrap();
    let rec = Recording::read_dir(&dir).unwrap();
    assert_eq!(rec.connections[0].meta.version, 1);
    let (jobs, _) = play(&rec);
    let metas = completed(&jobs);
    assert_eq!(
        metas.iter().map(|m| (**m).clone()).collect::<Vec<_>>(),
        [Identity {
            pid: 4242,
            process: "python3".into(),
            serial: 1,
            // Worked out from the bytes, as live.
            role: Some(crate::flows::Role::Client),
            ..Identity::default()
        }]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_version_this_agent_does_not_know_is_refused() {
    let dir = temp_dir("v4");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("1-0000000000000001-1.jsonl"), "{\"format\":\"taskless-agent-recording\",\"version\":4,\"pid\":1,\"comm\":\"c\",\"conn\":\"0x1\",\"unix_offset_ns\":0}\n").unwrap();
    let err = Recording::read_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("version 4"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_directory_without_connections_or_with_a_foreign_file_is_refused() {
    let dir = temp_dir("bad");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(matches!(
        Recording::read_dir(&dir),
        Err(RecordError::Empty(_))
    ));
    std::fs::write(dir.join("x.jsonl"), "{\"format\":\"other\",\"version\":1,\"pid\":1,\"comm\":\"c\",\"conn\":\"0x1\",\"unix_offset_ns\":0}\n").unwrap();
    let err = Recording::read_dir(&dir).unwrap_err();
    assert!(matches!(err, RecordError::Format { line: 1, .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A socket closed live (`close`, no `SSL_free`) ends its connection at that moment; the
/// recording keeps that moment, so the replayed connection ends there too.
#[test]
fn a_closed_socket_ends_the_recorded_connection_where_it_ended_live() {
    let dir = temp_dir("fdclose");
    let tgid = std::process::id();
    let live = vec![
        with_fd(data(7, 10, Flow::Egress, REQ), 905),
        Record::FdClose {
            tgid,
            fd: 905,
            timestamp_ns: 30,
        },
        // A close of an fd no connection is on changes nothing.
        Record::FdClose {
            tgid,
            fd: 906,
            timestamp_ns: 31,
        },
    ];
    let (live_jobs, _) = live_run(&dir, 4, &live, 99);
    let rec = Recording::read_dir(&dir).unwrap();
    let times: Vec<u64> = rec
        .records()
        .iter()
        .filter_map(|r| match r {
            Record::Close { timestamp_ns, .. } => Some(*timestamp_ns),
            _ => None,
        })
        .collect();
    assert_eq!(
        times,
        vec![30],
        "the close is recorded at the socket's close"
    );
    let (replay_jobs, _) = play(&rec);
    assert!(
        live_jobs
            .iter()
            .any(|j| matches!(j, Moment::Incomplete { .. })),
        "{live_jobs:#?}"
    );
    assert_eq!(by_conn(&replay_jobs), by_conn(&live_jobs));
    let _ = std::fs::remove_dir_all(&dir);
}
