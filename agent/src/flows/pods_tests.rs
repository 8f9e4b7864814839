use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use super::*;
use crate::flows::k8s;

/// A `/pods` document in the kubelet's shape: a containerd pod with an init container, a
/// static pod under CRI-O, a pod whose container has not started.
const PODS: &[u8] = include_bytes!("testdata/kubelet-pods.json");
const UID: &str = "0f2c4e8a-1b3d-4c5e-9f70-8a9b0c1d2e3f";
const API: &str = "4f2a9c1e7b3d5a6f8e0c2b4d6f8a0c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a";

#[test]
fn parses_the_pods_of_a_pod_list() {
    let pods = parse_pods(PODS).expect("pod list");
    assert_eq!(pods.len(), 3);
    let billing = &pods[UID];
    assert_eq!(billing.name, "billing-7d9f8b6c5-x2k4q");
    assert_eq!(billing.namespace, "payments");
    assert_eq!(billing.labels["app.kubernetes.io/name"], "billing");
    assert_eq!(billing.containers[API], "api");
    assert_eq!(
        billing.containers["8c6b0a4f2e1d3c5b7a9f8e6d4c2b0a1f3e5d7c9b1a3f5e7d9c1b3a5f7e9d1c3b"],
        "migrate"
    );
    // CRI-O's scheme, upper-case id in the document: keyed as the cgroup names it.
    let apiserver = &pods["8f3e0a1b2c3d4e5f60718293a4b5c6d7"];
    assert_eq!(
        apiserver.containers["2b4d6f8a0c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a4f2a9c1e7b3d5a6f8e0c"],
        "kube-apiserver"
    );
    assert!(
        pods["11111111-2222-3333-4444-555555555555"]
            .containers
            .is_empty()
    );
    assert!(parse_pods(b"{\"items\": [{\"metadata\": {}}]}").is_err());
    assert!(parse_pods(b"not json").is_err());
}

#[test]
fn lookup_names_known_pods_and_asks_for_a_refresh_for_unknown_ones() {
    let pods = Pods::with(parse_pods(PODS).expect("pod list"));
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{API}.scope",
        UID.replace('-', "_")
    );
    let cgroup = k8s::parse(&path).expect("pod cgroup");
    let got = pods.lookup(&cgroup);
    assert_eq!(got.pod.as_deref(), Some("billing-7d9f8b6c5-x2k4q"));
    assert_eq!(got.namespace.as_deref(), Some("payments"));
    assert_eq!(got.container.as_deref(), Some("api"));
    assert_eq!(got.runtime.as_deref(), Some("containerd"));
    assert_eq!(got.labels["pod-template-hash"], "7d9f8b6c5");
    assert!(!pods.wanted.load(Ordering::Acquire));
    let json = serde_json::to_value(&got).expect("json");
    assert_eq!(json["podUid"], UID);
    assert_eq!(json["containerId"], API);
    assert_eq!(json["labels"]["app.kubernetes.io/name"], "billing");

    let unknown = k8s::parse(&format!(
        "/kubepods/besteffort/pod99999999-2222-3333-4444-555555555555/crio-{API}"
    ))
    .expect("pod cgroup");
    let got = pods.lookup(&unknown);
    assert_eq!(got.pod, None);
    assert_eq!(got.pod_uid, "99999999-2222-3333-4444-555555555555");
    assert_eq!(got.container_id.as_deref(), Some(API));
    assert!(
        pods.wanted.load(Ordering::Acquire),
        "a refresh is asked for"
    );
}

#[test]
fn in_cluster_default_only_in_a_pod_with_a_node_name() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    assert_eq!(
        KubeletConfig::in_cluster(&env(&[("NODE_NAME", "w1")])),
        None
    );
    assert_eq!(
        KubeletConfig::in_cluster(&env(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")])),
        None
    );
    let c = KubeletConfig::in_cluster(&env(&[
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("NODE_NAME", "worker-1"),
    ]))
    .expect("in a pod");
    assert_eq!(c.url, "https://worker-1:10250");
    assert_eq!(
        c.token,
        Some(PathBuf::from(
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        ))
    );
}

/// A kubelet on 127.0.0.1 over TLS (a CA and a `localhost` certificate made now), answering
/// every request with `status` and `body` and keeping each request's head.
struct FakeKubelet {
    url: String,
    ca: PathBuf,
    heads: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

impl FakeKubelet {
    fn start(status: &'static str, body: &'static [u8]) -> Self {
        // One directory per fake kubelet: tests that run at once with the same status must not
        // remove each other's files.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "taskless-kubelet-{}-{}-{}",
            std::process::id(),
            status.replace(' ', ""),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test kubelet CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let Ok(conn) = rustls::ServerConnection::new(Arc::clone(&config)) else {
                    break;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut head = String::new();
                let mut reader = BufReader::new(&mut tls);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => head.push_str(&line),
                    }
                }
                if head.is_empty() {
                    continue; // a client that refused the certificate
                }
                seen.lock().unwrap().push(head);
                let _ = write!(
                    tls,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(body);
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        Self {
            url: format!("https://localhost:{port}"),
            ca,
            heads,
            dir,
        }
    }

    fn config(&self) -> KubeletConfig {
        KubeletConfig {
            url: self.url.clone(),
            ca: Some(self.ca.clone()),
            token: None,
            insecure: false,
            refresh: Duration::from_secs(30),
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn fetches_pods_over_tls_with_the_token_and_refuses_an_unknown_certificate() {
    let kubelet = FakeKubelet::start("200 OK", PODS);
    let token = kubelet.dir.join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    let client = Kubelet::new(KubeletConfig {
        token: Some(token.clone()),
        ..kubelet.config()
    })
    .expect("client");
    let pods = client.fetch().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pods[UID].name, "billing-7d9f8b6c5-x2k4q");
    let heads = kubelet.heads.lock().unwrap().clone();
    assert!(heads[0].starts_with("GET /pods HTTP/1.1\r\n"), "{heads:?}");
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("authorization: bearer s3cr3t-token\r\n"),
        "{heads:?}"
    );
    // A rotated token is read again.
    std::fs::write(&token, "rotated").unwrap();
    client.fetch().expect("second fetch");
    assert!(kubelet.heads.lock().unwrap()[1].contains("Bearer rotated"));

    // Without the CA: the web roots do not vouch for it.
    let untrusting = Kubelet::new(KubeletConfig {
        ca: None,
        ..kubelet.config()
    })
    .expect("client");
    let e = untrusting.fetch().expect_err("unknown issuer");
    assert!(e.to_string().contains(&kubelet.url), "{e}");
    // Unless told to trust anything.
    let insecure = Kubelet::new(KubeletConfig {
        ca: None,
        insecure: true,
        ..kubelet.config()
    })
    .expect("client");
    assert_eq!(insecure.fetch().expect("insecure").len(), 3);
}

#[test]
fn a_refused_request_is_an_error_naming_the_url_and_the_cache_counts_it() {
    let kubelet = FakeKubelet::start("403 Forbidden", b"{\"kind\":\"Status\"}");
    let client = Kubelet::new(kubelet.config()).expect("client");
    let e = client.fetch().expect_err("forbidden");
    assert!(
        e.to_string().contains("/pods") && e.to_string().contains("403"),
        "{e}"
    );
    let pods = Pods::watch(client);
    assert_eq!(pods.failures.load(Ordering::Relaxed), 1);
    // A CA file without certificates is refused at once.
    std::fs::write(&kubelet.ca, "nothing").unwrap();
    assert!(Kubelet::new(kubelet.config()).is_err());
}

#[test]
fn the_refresh_thread_serves_pods_from_the_kubelet() {
    let kubelet = FakeKubelet::start("200 OK", PODS);
    let pods = Pods::watch(Kubelet::new(kubelet.config()).expect("client"));
    let cgroup = k8s::parse(&format!("/kubepods/burstable/pod{UID}/{API}")).expect("cgroup");
    assert_eq!(pods.lookup(&cgroup).container.as_deref(), Some("api"));
    assert_eq!(pods.failures.load(Ordering::Relaxed), 0);
}
