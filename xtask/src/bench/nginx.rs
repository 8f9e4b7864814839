//! The server of `cargo xtask bench`: nginx over TLS on loopback, from a generated configuration
//! in the run's own directory (its own pid file, logs and temporary paths, in the foreground).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{procs::Guard, util};

/// The small response body: a small JSON object, the same for every request.
pub const BODY: &str = r#"{"id":"cus_bench","object":"customer","email":"jenny@example.com"}"#;

/// The least size of the large response body.
pub const LARGE_BODY: usize = 64 * 1024;

/// The large response body: a page of at least [`LARGE_BODY`] bytes of JSON contacts (ids,
/// emails, phone numbers, street addresses, tags, scores), what an API's list call returns and
/// what the pii pack reads whole.
pub fn large_body() -> String {
    let mut contacts = Vec::new();
    let mut len = 0;
    let mut i = 0u32;
    while len < LARGE_BODY {
        let contact = serde_json::json!({
            "id": format!("ct_{:08x}", 0x5eed_0000u32 + i * 7919),
            "email": format!("person{i}@mail{}.example.org", i % 7),
            "phone": format!("(415) 555-{:04}", 100 + (i * 37) % 9_900),
            "company": "Acme Widgets Ltd",
            "street": format!("{} Market Street", 10 + i),
            "tags": ["lead", "newsletter"],
            "score": 0.5 + f64::from(i % 100) / 100.0,
        });
        len += contact.to_string().len() + 1;
        contacts.push(contact);
        i += 1;
    }
    serde_json::json!({"data": contacts, "has_more": true}).to_string()
}

/// A running nginx, stopped on drop (its workers with it).
pub struct Nginx {
    process: Guard,
    /// `https://127.0.0.1:PORT/v1/customers/cus_bench`: [`BODY`].
    pub url: String,
    /// `https://127.0.0.1:PORT/v2/contacts`: [`large_body`].
    pub large_url: String,
}

/// The shared library file a program loads for `soname` (from `ldd`), if it links it.
pub fn linked_library(program: &Path, soname: &str) -> anyhow::Result<Option<PathBuf>> {
    let out = util::output(Command::new("ldd").arg(program))?;
    Ok(out.lines().find_map(|l| {
        let (name, rest) = l.trim().split_once(" => ")?;
        (name == soname).then(|| PathBuf::from(rest.split_whitespace().next().unwrap_or("")))
    }))
}

/// The full path of a program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// A loopback port free right now.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// A self-signed certificate and key for `localhost` (openssl's command line).
fn certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    util::output(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )
    .context("making a self-signed certificate")?;
    Ok((cert, key))
}

fn config(dir: &Path, port: u16, cert: &Path, key: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        default_type application/json;
        location = /v2/contacts {{
            alias {d}/large.json;
        }}
        location / {{
            return 200 '{BODY}';
        }}
    }}
}}
",
        cert = cert.display(),
        key = key.display(),
    )
}

impl Nginx {
    /// Starts nginx in `dir`, pinned to `cpu` when given. Its libssl is a copy of the system's in
    /// `dir/lib`: tracers that put uprobes on the library file for every process (bpftrace's do)
    /// then trap only the client's calls, as the agent's `--pid` does, and the server's cost is
    /// the same in every configuration.
    pub fn start(dir: &Path, cpu: Option<&str>) -> anyhow::Result<Self> {
        let nginx = which("nginx")
            .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
            .context("nginx is not installed (cargo xtask setup installs it)")?;
        let lib = dir.join("lib");
        std::fs::create_dir_all(&lib)?;
        if let Some(libssl) = linked_library(&nginx, "libssl.so.3")? {
            std::fs::copy(&libssl, lib.join("libssl.so.3"))
                .with_context(|| format!("copying {}", libssl.display()))?;
        }
        let (cert, key) = certificate(dir)?;
        let port = free_port()?;
        std::fs::write(dir.join("large.json"), large_body())?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(dir, port, &cert, &key))?;
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu]).arg(&nginx);
                c
            }
            None => Command::new(&nginx),
        };
        cmd.arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .env("LD_LIBRARY_PATH", &lib)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = Guard(cmd.spawn().context("starting nginx")?);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if process.0.try_wait()?.is_some() || Instant::now() > deadline {
                bail!(
                    "nginx did not start listening on {addr}:\n{}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            process,
            url: format!("https://127.0.0.1:{port}/v1/customers/cus_bench"),
            large_url: format!("https://127.0.0.1:{port}/v2/contacts"),
        })
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
            // The parent's pid is the second field after the name.
            after.split_whitespace().nth(1) == Some(&pid.to_string())
        })
        .collect()
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: no memory is passed.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits. Its workers would outlive a
        // SIGKILLed master, so they are killed first when it does not stop in time.
        let master = self.process.pid();
        signal(master, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.process.0.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for worker in children(master) {
            signal(worker, libc::SIGKILL);
        }
        // The guard kills and reaps the master.
    }
}
