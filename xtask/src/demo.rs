//! `cargo xtask demo`: a local HTTPS API, real clients (curl and Python) calling it, and the
//! agent attached to them by pid, printing what it captures.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{setup, util};

/// A child killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Python client: one keep-alive connection, a round of payments calls every second.
const PYTHON_CLIENT: &str = r#"
import http.client, json, ssl, sys, time
base, ca, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = base.split("//")[1].split(":")
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection(host, int(port), context=ctx)
form = {"Content-Type": "application/x-www-form-urlencoded"}
for i in range(rounds):
    calls = [
        ("POST", "/v1/charges?delay_ms=40", "amount=2000&currency=usd&source=tok_visa", dict(form, **{"Idempotency-Key": f"demo-{i}"})),
        ("POST", "/v1/charges", "amount=500&currency=usd&source=tok_chargeDeclined", form),
        ("GET", "/v1/customers/cus_demo", None, {}),
        ("POST", "/v1/chat/completions", json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}), {"Content-Type": "application/json"}),
    ]
    for method, path, body, headers in calls:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
    time.sleep(1)
"#;

pub fn run(root: &Path, seconds: u64) -> anyhow::Result<()> {
    setup::ensure()?;
    if !util::is_root() {
        bail!("the demo loads eBPF programs and attaches uprobes: run it as root");
    }
    util::run(util::cargo().args(["build", "--bins"]))?;
    crate::build_packs(root)?;

    let target = util::target_dir(root);
    let bin = target.join("debug");
    let demo = target.join("demo");
    std::fs::create_dir_all(&demo)?;
    let ca = demo.join("ca.pem");

    let mut api = Guard(
        Command::new(bin.join("taskless-testapi"))
            .arg("--ca-file")
            .arg(&ca)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting taskless-testapi")?,
    );
    let mut first = String::new();
    BufReader::new(api.0.stdout.take().context("no stdout")?).read_line(&mut first)?;
    let base = first
        .trim()
        .strip_prefix("listening ")
        .context("unexpected testapi output")?
        .to_owned();
    eprintln!("demo: local API at {base}");

    let rounds = seconds + 30;
    let script = demo.join("client.py");
    std::fs::write(&script, PYTHON_CLIENT)?;
    let python = Guard(
        Command::new("python3")
            .arg(&script)
            .arg(&base)
            .arg(&ca)
            .arg(rounds.to_string())
            .spawn()
            .context("starting python3")?,
    );

    // curl: one process, one connection reused, a call every half second.
    let mut curl = Command::new("curl");
    curl.args([
        "-sS",
        "-o",
        "/dev/null",
        "--http1.1",
        "--rate",
        "2/s",
        "--cacert",
    ])
    .arg(&ca);
    for i in 0..rounds * 2 {
        if i > 0 {
            curl.args(["--next", "-sS", "-o", "/dev/null", "--http1.1", "--cacert"])
                .arg(&ca);
        }
        if i % 2 == 0 {
            curl.arg(format!("{base}/v1/customers/cus_{i}"));
        } else {
            curl.args([
                "-d",
                "amount=700&source=tok_chargeDeclined",
                &format!("{base}/v1/charges"),
            ]);
        }
    }
    let curl = Guard(curl.spawn().context("starting curl")?);
    // Let both load their TLS library before attaching.
    std::thread::sleep(Duration::from_millis(500));

    eprintln!(
        "demo: attaching taskless-agent to python3 (pid {}) and curl (pid {}) for {seconds} s",
        python.0.id(),
        curl.0.id()
    );
    let mut agent = Guard(
        Command::new(bin.join("taskless-agent"))
            .args([
                "--pid",
                &python.0.id().to_string(),
                "--pid",
                &curl.0.id().to_string(),
                "--packs",
            ])
            .arg(target.join("packs"))
            .args(["--stats-interval", "5"])
            .spawn()
            .context("starting taskless-agent")?,
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if let Some(status) = agent.0.try_wait()? {
            bail!("the agent exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(agent.0.id())?, libc::SIGINT) };
    let status = agent.0.wait()?;
    drop((python, curl, api));
    if !status.success() {
        bail!("the agent exited with {status}");
    }
    Ok(())
}
