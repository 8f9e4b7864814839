//! `cargo xtask demo`: a local HTTPS API that answers like Stripe and OpenAI, real clients
//! (curl and Python) calling it, and the agent attached to them by pid, printing one readable
//! line per exchange with what each pack found. The stripe and openai packs are pointed at the
//! local API through their `config.json` (`domains`), as a user would point them at another
//! host.

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

/// The Python client: one keep-alive connection, a round of payments and completion calls
/// every second.
const PYTHON_CLIENT: &str = r#"
import http.client, json, ssl, sys, time
base, ca, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = base.split("//")[1].split(":")
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection(host, int(port), context=ctx)
form = {"Content-Type": "application/x-www-form-urlencoded"}
chat = {"Content-Type": "application/json", "Authorization": "Bearer sk-demo-not-a-real-key"}
for i in range(rounds):
    calls = [
        ("POST", "/v1/charges?delay_ms=40", "amount=2000&currency=usd&source=tok_visa&receipt_email=jenny%40example.com", dict(form, **{"Idempotency-Key": f"demo-{i}"})),
        ("POST", "/v1/charges", "amount=500&currency=usd&source=tok_chargeDeclinedInsufficientFunds", form),
        ("GET", "/v1/customers/cus_demo", None, {}),
        ("POST", "/v1/chat/completions", json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}), chat),
        ("POST", "/v1/chat/completions", json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}), chat),
    ]
    for method, path, body, headers in calls:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
    time.sleep(1)
"#;

/// Copies the built packs to `dir`, pointing the stripe and openai packs at `localhost` through
/// their `config.json` (the other packs keep their own hosts, so they stay quiet).
fn packs_for_localhost(built: &Path, dir: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    for entry in std::fs::read_dir(built).with_context(|| format!("reading {}", built.display()))? {
        let src = entry?.path();
        let Some(name) = src.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !src.join("manifest.json").exists() {
            continue;
        }
        let dst = dir.join(&name);
        std::fs::create_dir_all(&dst)?;
        for f in ["manifest.json", "config.json", "pack.wasm"] {
            std::fs::copy(src.join(f), dst.join(f))
                .with_context(|| format!("copying {name}/{f}"))?;
        }
        if name.starts_with("stripe@") || name.starts_with("openai@") {
            let path = dst.join("config.json");
            let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            config["configuration"]["domains"] = serde_json::json!(["localhost"]);
            std::fs::write(&path, config.to_string())?;
        }
    }
    Ok(())
}

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
    let packs = demo.join("packs");
    packs_for_localhost(&target.join("packs"), &packs)?;

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
                &format!("{base}/v1/charges?api_key=sk_test_demo"),
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
    eprintln!(
        "demo: the stripe and openai packs are pointed at the local API ({}); one line per exchange:\n\
         demo:   time  process[pid]  method  host/path  status  duration  what the packs found",
        packs.display()
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
            .arg(&packs)
            // Readable lines (and a summary every 5 s) on stdout; counters only at exit.
            .args(["--output", "pretty", "--summary-interval", "5"])
            .args(["--stats-interval", "0"])
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
