//! The DaemonSet scenario on one machine, end to end as root: the agent inside a container
//! built from the project's Containerfile (runtime stage, from the binary the tests built), with
//! the host's pid namespace and exactly the capabilities `deploy/kubernetes` grants; a TLS client
//! (curl, with the container's own libssl) in another container, in a cgroup laid out as a
//! kubelet lays out a pod's. The agent, started with `--all` (the image's default), must capture
//! the client's exchange and name its container and process.

use std::{
    os::unix::fs::MetadataExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use taskless_agent::flows::k8s::{self, Runtime};
use taskless_e2e::{
    containers::{
        CgroupGuard, ContainerGuard, built_image, capability_mask, effective_capabilities, inspect,
        manifest_capabilities, manifest_text, podman, random_uuid, ulimit_args,
    },
    harness::{Agent, TempDir, TestApi, matching, require_root},
};

const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

#[test]
fn agent_in_a_container_captures_a_client_in_another_container() {
    require_root();
    let agent_image = built_image("agent");
    let client_image = built_image("client");
    let caps = manifest_capabilities();
    let api = TestApi::start().expect("test API");
    let port = api.server.addr.port();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );

    // The agent as the DaemonSet runs it: host pids, its capabilities and no others, the
    // runtime's default seccomp profile, a read-only root (and no tmpfs), the node's state
    // directory and BTF mounted, no network of its own to use.
    assert!(
        manifest_text().contains("seccompProfile:\n              type: RuntimeDefault"),
        "the manifest's seccomp profile changed: change the container here too"
    );
    let agent_name = format!("taskless-e2e-agent-{unique}");
    let _agent_guard = ContainerGuard(agent_name.clone());
    std::fs::create_dir_all("/var/lib/taskless-agent").expect("state directory");
    let mut cmd = podman();
    cmd.args([
        "run",
        "--rm",
        "--name",
        &agent_name,
        "--pid=host",
        "--network=none",
    ])
    .args(["--cap-drop=all", &format!("--cap-add={}", caps.join(","))])
    .args(["--read-only", "--read-only-tmpfs=false"])
    .args(["-v", "/sys/kernel/btf:/sys/kernel/btf:ro"])
    .args(["-v", "/var/lib/taskless-agent:/var/lib/taskless-agent"])
    .args(["-e", "TASKLESS_LOG=info,taskless_agent=debug"])
    .args(ulimit_args())
    .arg(&agent_image)
    // The image's own command is `--all`; the stats line would only add noise here.
    .args(["--all", "--stats-interval", "0"]);
    let mut agent = Agent::start_command(cmd).expect("podman run (agent)");
    agent
        .wait_for_log("ready", Duration::from_secs(120))
        .expect("agent ready in its container");
    let agent_pid: u32 = inspect(&agent_name, "{{.State.Pid}}")
        .expect("agent pid")
        .parse()
        .expect("numeric pid");
    assert_eq!(
        effective_capabilities(agent_pid),
        Some(capability_mask(&caps)),
        "the agent must run with exactly the manifest's capabilities {caps:?}"
    );

    // The client: curl in its own container, in a kubepods-style pod cgroup. Its first request
    // waits at the gate until the agent has attached to its libssl.
    let pod_uid = random_uuid();
    let pod_cgroup = format!("/kubepods/besteffort/pod{pod_uid}");
    let _cgroup_guard = CgroupGuard(pod_cgroup.clone());
    let client_name = format!("taskless-e2e-client-{unique}");
    let _client_guard = ContainerGuard(client_name.clone());
    let dir = TempDir::new("container").expect("tempdir");
    std::fs::copy(&api.server.ca_file, dir.path().join("ca.pem")).expect("CA file");
    let base = format!("https://localhost:{port}");
    let out = podman()
        .args(["run", "-d", "--name", &client_name, "--network=host"])
        .args(["--cgroup-parent", &pod_cgroup])
        .arg("-v")
        .arg(format!("{}:/ca:ro", dir.path().display()))
        .args(ulimit_args())
        .arg(&client_image)
        .args(["/usr/bin/curl", "-sS", "-o", "/dev/null", "--http1.1"])
        .args(["--cacert", "/ca/ca.pem", &format!("{base}/v1/gate")])
        .args(["--next", "-sS", "-o", "/dev/null", "--http1.1"])
        .args(["--cacert", "/ca/ca.pem"])
        .arg(format!("{base}/v1/customers/cus_in_container"))
        .stderr(Stdio::inherit())
        .output()
        .expect("podman run (client)");
    assert!(out.status.success(), "the client container did not start");
    let container_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(container_id.len(), 64, "podman printed {container_id:?}");

    api.wait_gate_waiters(1, Duration::from_secs(30))
        .expect("curl at the gate");
    let curl_pid: u32 = inspect(&client_name, "{{.State.Pid}}")
        .expect("client pid")
        .parse()
        .expect("numeric pid");
    // The client maps its container's libssl, another file than the host's.
    let maps = std::fs::read_to_string(format!("/proc/{curl_pid}/maps")).expect("client maps");
    assert!(maps.contains("libssl.so.3"), "curl maps no libssl:\n{maps}");
    let inside = std::fs::metadata(format!("/proc/{curl_pid}/root{LIBSSL}")).expect("its libssl");
    if let Ok(host) = std::fs::metadata(LIBSSL) {
        assert_ne!(
            (inside.dev(), inside.ino()),
            (host.dev(), host.ino()),
            "the client must use its container's own libssl"
        );
    }
    agent
        .wait_for_log("comm=curl", Duration::from_secs(20))
        .expect("the agent attaches to the client's libssl");
    api.server.open_gate();
    let code = podman()
        .args(["wait", &client_name])
        .output()
        .expect("podman wait");
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "the client failed"
    );

    let mut seen = Vec::new();
    // Checked through the output below, which names what did arrive.
    let _ = agent.wait_for_line_containing("cus_in_container", Duration::from_secs(30), &mut seen);
    let out = agent.stop(seen).expect("agent stops");
    let hits = matching(
        &out.lines,
        &[
            ("core/path", "/v1/customers/cus_in_container"),
            ("core/status", "200"),
        ],
    );
    assert_eq!(hits.len(), 1, "{:#?}\n{}", out.lines, out.stderr);
    let source = &hits[0]["source"];
    assert_eq!(source["containerId"], container_id.as_str(), "{source}");
    assert_eq!(source["process"], "curl", "{source}");
    assert_eq!(source["pid"], curl_pid, "{source}");
    // The cgroup the kubepods-style parent made names the pod and the container.
    let cgroup = source["cgroup"].as_str().expect("cgroup in source");
    let pod = k8s::parse(cgroup).expect("a pod cgroup");
    assert_eq!(pod.pod_uid, pod_uid, "{cgroup}");
    assert_eq!(pod.container_id.as_deref(), Some(container_id.as_str()));
    assert_eq!(pod.runtime, Some(Runtime::Podman));
    // And the line says so itself, in `source.k8s` (no kubelet here: no names).
    assert_eq!(
        source["k8s"],
        serde_json::json!({"podUid": pod_uid, "containerId": container_id, "runtime": "podman"}),
        "{source}"
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// The image holds the agent, its packs and the C runtime, and no shell.
#[test]
fn the_image_holds_the_agent_and_its_packs_only() {
    require_root();
    let image = built_image("agent");
    let listing = Command::new("podman")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Config.Entrypoint}} {{.Config.Cmd}}",
            &image,
        ])
        .output()
        .expect("podman image inspect");
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout).trim(),
        "[/usr/bin/taskless-agent] [--all]"
    );
    let run = |args: &[&str]| {
        podman()
            .args(["run", "--rm", "--network=none"])
            .args(ulimit_args())
            .args(args)
            .output()
            .expect("podman run")
    };
    let packs = run(&[&image, "pack", "list", "/usr/share/taskless-agent/packs"]);
    let text = String::from_utf8_lossy(&packs.stdout).into_owned()
        + &String::from_utf8_lossy(&packs.stderr);
    assert!(packs.status.success(), "{text}");
    for pack in ["core", "stripe", "openai"] {
        assert!(text.contains(pack), "{pack} not listed: {text}");
    }
    let shell = run(&["--entrypoint", "/bin/sh", &image, "-c", "true"]);
    assert!(!shell.status.success(), "the image must not have a shell");
    // The agent in it has no debug information (the host's build has).
    let dir = TempDir::new("image-bin").expect("tempdir");
    let name = format!("taskless-e2e-inspect-{}", std::process::id());
    let _guard = ContainerGuard(name.clone());
    assert!(
        podman()
            .args(["create", "--name", &name, &image])
            .stdout(Stdio::null())
            .status()
            .expect("podman create")
            .success()
    );
    let copy = dir.path().join("taskless-agent");
    assert!(
        Command::new("podman")
            .args(["cp", &format!("{name}:/usr/bin/taskless-agent")])
            .arg(&copy)
            .status()
            .expect("podman cp")
            .success()
    );
    // Its own sections, as readelf lists them (the eBPF object embedded in it keeps its own
    // debug information: the BTF the kernel needs).
    let has_debug_info = |path: &std::path::Path| {
        let out = Command::new("readelf")
            .args(["-S", "--wide"])
            .arg(path)
            .output()
            .expect("readelf (binutils)");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).contains(" .debug_info ")
    };
    assert!(has_debug_info(&taskless_e2e::harness::agent_bin()));
    assert!(
        !has_debug_info(&copy),
        "the image's agent keeps its debug information"
    );
}
