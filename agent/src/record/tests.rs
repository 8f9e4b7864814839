use std::sync::{Arc, atomic::Ordering};

use agent_common::Direction;

use super::*;
use crate::flows::{FlowStats, Flows};

fn data(conn: u64, t: u64, direction: Direction, payload: &[u8]) -> Record {
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
            dir: Dir::Egress,
            data: b"GET / HTTP/1.1\r\n\r\n\x00\xff".to_vec(),
        },
        Entry::Gap {
            t: 6,
            dir: Dir::Ingress,
            len: 70_000,
        },
        Entry::Close { t: 7 },
    ];
    for e in entries {
        let text = e.to_json();
        assert_eq!(Entry::from_json(&text), Ok(e.clone()), "{text}");
    }
    assert_eq!(
        Entry::Data {
            t: 1,
            dir: Dir::Ingress,
            data: b"hi".to_vec()
        }
        .to_json(),
        r#"{"t":1,"dir":"ingress","data":"aGk="}"#
    );
}

#[test]
fn malformed_lines_are_refused() {
    assert!(Entry::from_json(r#"{"t":1,"dir":"egress"}"#).is_err());
    assert!(Entry::from_json(r#"{"t":1,"dir":"egress","data":"!!","gap":2}"#).is_err());
    assert!(Entry::from_json(r#"{"t":1,"dir":"sideways","data":""}"#).is_err());
    assert!(Entry::from_json(r#"{"t":1,"dir":"egress","data":"***"}"#).is_err());
    assert!(Entry::from_json(r#"{"t":1,"close":false}"#).is_err());
}

#[test]
fn partial_calls_are_stored_as_gaps_of_the_size_flows_reports() {
    let Record::Data(mut d) = data(9, 10, Direction::Ingress, b"abc") else {
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
                dir: Dir::Ingress,
                data: b"abc".to_vec()
            },
            Entry::Gap {
                t: 10,
                dir: Dir::Ingress,
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
            dir: Dir::Ingress,
            len: 100
        }]
    );
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
        Direction::Ingress,
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
    );
    if let Record::Data(d) = &mut truncated {
        d.truncated = true;
        d.total_len += 50;
    }
    let live = vec![
        data(1, 10, Direction::Egress, &req[..20]),
        data(2, 11, Direction::Egress, req),
        data(1, 12, Direction::Egress, &req[20..]),
        data(1, 20, Direction::Ingress, resp),
        truncated,
        Record::Close {
            tgid: std::process::id(),
            conn: 1,
            timestamp_ns: 30,
        },
        // Same key after the close: a new connection and a new file.
        data(1, 40, Direction::Egress, req),
    ];
    // Room for one open file only: every switch of connection closes one and reopens another.
    let recorder = Recorder::start_with_limit(&dir, 1_700_000_000_000_000_000, 1).unwrap();
    for r in &live {
        recorder.record(r);
    }
    let stats = Arc::clone(recorder.stats());
    recorder.finish();
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(stats.files.load(Ordering::Relaxed), 3);

    let rec = Recording::read_dir(&dir).unwrap();
    for c in &rec.connections {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&c.path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", c.path.display());
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
            Record::ServerName { .. } | Record::CodeChanged { .. } => 0,
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

    let run = |records: Vec<Record>| {
        let stats = Arc::new(FlowStats::default());
        let mut flows = Flows::new(taskless_http::Config::default(), Arc::clone(&stats));
        let mut jobs = Vec::new();
        for r in records {
            flows.handle(r, &mut |j| jobs.push(format!("{j:?}")));
        }
        flows.close_all(100, &mut |j| jobs.push(format!("{j:?}")));
        (jobs, stats.lost_bytes.load(Ordering::Relaxed))
    };
    let (live_jobs, live_lost) = run(live);
    let (replay_jobs, replay_lost) = run(replayed);
    assert_eq!(live_lost, 50);
    assert_eq!(replay_lost, live_lost);
    assert!(live_jobs.len() >= 4, "{live_jobs:#?}");
    assert_eq!(replay_jobs, live_jobs);
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
