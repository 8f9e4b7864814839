//! The configuration file and the environment, end to end: a real run configured by a file
//! alone (what the DaemonSet's ConfigMap does), the command line and environment winning over
//! it, and `taskless-agent check` as root and with a capability dropped.

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use taskless_e2e::harness::{
    Agent, TempDir, TestApi, agent_bin, matching, packs_dir, require_root,
};

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run agent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_config_file_alone_configures_a_real_run() {
    require_root();
    let dir = TempDir::new("config-e2e").expect("tempdir");
    let record = dir.path().join("recording");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "# as the ConfigMap would say it\nall = true\nstats-interval = 0\npacks = {:?}\nrecord = {:?}\nlog = \"info,taskless_agent=debug\"\n",
            packs_dir().display().to_string(),
            record.display().to_string()
        ),
    )
    .expect("config file");
    let api = TestApi::start().expect("test API");
    let mut cmd = Command::new(agent_bin());
    cmd.arg("--config").arg(&config);
    let mut agent = Agent::start_command(cmd).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    let status = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--http1.1", "--cacert"])
        .arg(&api.server.ca_file)
        .arg(format!(
            "{}/v1/customers/cus_config_file",
            api.server.base_url()
        ))
        .status()
        .expect("curl");
    assert!(status.success());
    let mut seen = Vec::new();
    let _ = agent.wait_for_line_containing("cus_config_file", Duration::from_secs(20), &mut seen);
    let out = agent.stop(seen).expect("agent stops");
    // `all` from the file: curl, started after the agent, was found and captured.
    let hits = matching(
        &out.lines,
        &[
            ("core/path", "/v1/customers/cus_config_file"),
            ("core/status", "200"),
        ],
    );
    assert_eq!(hits.len(), 1, "{:#?}\n{}", out.lines, out.stderr);
    // `log` from the file: debug lines were printed.
    assert!(out.stderr.contains("DEBUG"), "{}", out.stderr);
    // `record` from the file: the recording holds the exchange (replayed to be read).
    let replayed = run(Command::new(agent_bin())
        .arg("replay")
        .arg(&record)
        .arg("--packs")
        .arg(packs_dir()));
    assert!(
        text(&replayed.stdout).contains("/v1/customers/cus_config_file"),
        "{}",
        text(&replayed.stderr)
    );
}

#[test]
fn bad_keys_and_values_name_the_key_and_the_file_and_stop_the_agent() {
    let dir = TempDir::new("config-e2e").expect("tempdir");
    let config = dir.path().join("config.toml");
    let file = config.display().to_string();
    for (contents, says) in [
        ("all = true\nringbuf = 4096\n", "unknown key `ringbuf`"),
        (
            "all = true\nringbuf_size = \"big\"\n",
            "key `ringbuf_size`: invalid value 'big'",
        ),
    ] {
        std::fs::write(&config, contents).expect("config file");
        let o = run(Command::new(agent_bin()).arg("--config").arg(&config));
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(&file) && err.contains(says), "{err}");
    }
    // An explicit file that is missing.
    let o = run(Command::new(agent_bin()).args(["--config", "/nonexistent/agent.toml", "--all"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("/nonexistent/agent.toml"));
}

#[test]
fn the_command_line_and_the_environment_win_over_the_file() {
    // `check` with packs named three ways: the packs line says which directory it loaded.
    require_root();
    let dir = TempDir::new("config-e2e").expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "packs = \"/nonexistent/from-file\"\n").expect("config");
    let check = |env: Option<&str>, arg: Option<&str>| {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("check").arg("--config").arg(&config);
        if let Some(a) = arg {
            cmd.args(["--packs", a]);
        }
        if let Some(e) = env {
            cmd.env("TASKLESS_DIRECTORY", e);
        }
        let o = run(&mut cmd);
        text(&o.stdout)
            .lines()
            .find(|l| l.contains(" packs: "))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(check(None, None).contains("/nonexistent/from-file"));
    assert!(check(Some("/nonexistent/from-env"), None).contains("/nonexistent/from-env"));
    let packs = packs_dir().display().to_string();
    let line = check(Some("/nonexistent/from-env"), Some(&packs));
    assert!(line.starts_with("ok") && line.contains("loaded"), "{line}");
}

#[test]
fn check_passes_as_root() {
    require_root();
    let o = run(Command::new(agent_bin())
        .arg("check")
        .arg("--packs")
        .arg(packs_dir()));
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", text(&o.stderr));
    for what in [
        "kernel: Linux ",
        "BTF: ",
        "CAP_SYS_ADMIN: present",
        "CAP_SYS_PTRACE: present",
        "CAP_DAC_READ_SEARCH: present",
        "ring buffer: ",
        "eBPF programs: ",
        "uprobes: ",
        "packs: ",
    ] {
        let l = out
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line:\n{out}"));
        assert!(l.starts_with("ok"), "{l}\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
}

/// `check` through setpriv with the manifest's capabilities but `dropped`.
fn check_without(dropped: &str) -> Output {
    let keep: Vec<String> = ["sys_admin", "sys_ptrace", "dac_read_search"]
        .iter()
        .filter(|c| **c != dropped)
        .map(|c| format!("+{c}"))
        .collect();
    run(Command::new("setpriv")
        .arg(format!("--bounding-set=-all,{}", keep.join(",")))
        .args(["--inh-caps=-all", "--"])
        .arg(agent_bin())
        .arg("check")
        .arg("--packs")
        .arg(packs_dir()))
}

#[test]
fn check_names_a_missing_capability_and_fails() {
    require_root();
    for (dropped, name) in [
        ("sys_ptrace", "CAP_SYS_PTRACE"),
        ("sys_admin", "CAP_SYS_ADMIN"),
    ] {
        let o = check_without(dropped);
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{out}\n{}", text(&o.stderr));
        let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
        assert!(
            fails
                .iter()
                .any(|l| l.starts_with(&format!("FAIL {name}: missing"))),
            "{out}"
        );
        // The others are present, and said so.
        for other in ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"] {
            if other != name {
                assert!(out.contains(&format!("ok   {other}: present")), "{out}");
            }
        }
        if dropped == "sys_admin" {
            // Without it nothing loads: the eBPF lines fail too, naming it.
            let ebpf = out
                .lines()
                .find(|l| l.contains("eBPF programs:"))
                .expect("eBPF line");
            assert!(
                ebpf.starts_with("FAIL") && ebpf.contains("CAP_SYS_ADMIN"),
                "{out}"
            );
        }
    }
}
