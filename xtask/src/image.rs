//! `cargo xtask image`: the container image from the Containerfile, on machines without an image
//! registry. The base images are root filesystems made by mmdebstrap from the Debian packages
//! the host's apt sources name, imported into podman; each is cached (tarball and image, keyed
//! by its recipe) so later runs take seconds.
//!
//! - the runtime base: Debian's `libc6`, `libgcc-s1` and `base-files`, nothing else;
//! - the build stage's Debian (`minbase`, with apt) for the full build;
//! - the test client: curl and the libssl it links, for the container test.
//!
//! `--prebuilt` builds the runtime stage from the agent and packs built on the host (the debug
//! binary the tests use, or `--release`), stripped of debug information: what `cargo xtask test`
//! does, so nothing is compiled twice. It writes the image names to `target/image/` for the
//! tests.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::util::{self, output, run, succeeds, tools_home};

/// A root filesystem made by mmdebstrap.
struct Rootfs {
    /// The image name (`localhost/<name>:<suite>-<hash>`).
    name: &'static str,
    /// mmdebstrap's variant: `extract` unpacks the packages and their dependencies only (no
    /// shell, no dpkg database); `minbase` is a Debian with apt.
    variant: &'static str,
    /// Packages besides the variant's own.
    include: &'static [&'static str],
}

const RUNTIME_BASE: Rootfs = Rootfs {
    name: "taskless-agent-base",
    variant: "extract",
    include: &["base-files", "libc6", "libgcc-s1"],
};

const BUILD_DEBIAN: Rootfs = Rootfs {
    name: "taskless-agent-debian",
    variant: "minbase",
    include: &[],
};

const TEST_CLIENT: Rootfs = Rootfs {
    name: "taskless-agent-testclient",
    variant: "extract",
    include: &["base-files", "curl"],
};

/// Files and folders no image needs.
const EXCLUDES: [&str; 4] = [
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
];

/// The podman command, with the OCI runtime that works on this host: on cgroup v1 or hybrid
/// hosts crun refuses to run containers, runc does not.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        cmd.args(["--runtime", "runc"]);
    }
    cmd
}

/// The Debian release the host runs (`VERSION_CODENAME`), whose packages the images hold.
fn suite() -> anyhow::Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME: the images are made from a Debian host's package sources")
}

/// The host's Debian package sources, which mmdebstrap reads as its mirror list.
fn apt_sources() -> anyhow::Result<PathBuf> {
    ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]
        .iter()
        .map(PathBuf::from)
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .context("no Debian package sources (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)")
}

/// Makes (or finds) the root filesystem's image; returns its name.
fn rootfs_image(fs: &Rootfs) -> anyhow::Result<String> {
    let suite = suite()?;
    let sources = apt_sources()?;
    let mut args: Vec<String> = vec![
        format!("--variant={}", fs.variant),
        "--format=tar".into(),
        "--quiet".into(),
    ];
    if !fs.include.is_empty() {
        args.push(format!("--include={}", fs.include.join(",")));
    }
    for ex in EXCLUDES {
        args.push(format!("--dpkgopt=path-exclude={ex}"));
    }
    let mut recipe = Sha256::new();
    recipe.update(args.join("\n"));
    recipe.update(&suite);
    recipe.update(std::fs::read(&sources)?);
    let hash = hex::encode(recipe.finalize());
    let tag = format!("localhost/{}:{suite}-{}", fs.name, &hash[..12]);
    let plain = format!("localhost/{}:{suite}", fs.name);
    if succeeds(Command::new("podman").args(["image", "exists", &tag])) {
        eprintln!("image: {tag} present");
        run(Command::new("podman").args(["tag", &tag, &plain]))?;
        return Ok(tag);
    }
    let dir = tools_home()?.join("images");
    std::fs::create_dir_all(&dir)?;
    let tar = dir.join(format!("{}-{suite}-{}.tar", fs.name, &hash[..12]));
    if !tar.exists() {
        eprintln!(
            "image: making the {} root filesystem ({suite}, {}) with mmdebstrap",
            fs.name, fs.variant
        );
        let partial = tar.with_extension("partial");
        run(Command::new("mmdebstrap")
            .args(&args)
            .arg(&suite)
            .arg(&partial)
            .arg(&sources))
        .context("mmdebstrap (Debian package: mmdebstrap; `cargo xtask setup` installs it)")?;
        std::fs::rename(&partial, &tar)?;
    }
    run(Command::new("podman").arg("import").arg(&tar).arg(&tag))?;
    run(Command::new("podman").args(["tag", &tag, &plain]))?;
    Ok(tag)
}

/// The hard limits of this process, as `--ulimit` options: a container's default limits may be
/// higher than the host lets a process without CAP_SYS_RESOURCE raise them to.
pub fn ulimit_args() -> Vec<String> {
    let mut v = Vec::new();
    for (name, res) in [
        ("nofile", libc::RLIMIT_NOFILE),
        ("nproc", libc::RLIMIT_NPROC),
    ] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(res, &raw mut lim) } != 0 {
            continue;
        }
        // podman runs the OCI runtime with at most 32768 processes, whatever its own limit.
        let max = match name {
            "nproc" => lim.rlim_max.min(32768),
            _ if lim.rlim_max == libc::RLIM_INFINITY => continue,
            _ => lim.rlim_max,
        };
        v.push("--ulimit".to_owned());
        v.push(format!("{name}={max}:{max}"));
    }
    v
}

/// Copies the agent (without debug information) and the packs into `dist/usr/...`, the layout
/// the Containerfile's `runtime-prebuilt` stage copies; returns a hash of what it holds.
fn stage_dist(binary: &Path, packs: &Path, dist: &Path) -> anyhow::Result<String> {
    if dist.exists() {
        std::fs::remove_dir_all(dist)?;
    }
    let bin_dir = dist.join("usr/bin");
    let packs_dir = dist.join("usr/share/taskless-agent/packs");
    std::fs::create_dir_all(&bin_dir)?;
    std::fs::create_dir_all(&packs_dir)?;
    let agent = bin_dir.join("taskless-agent");
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&agent))
    .context("objcopy (Debian package: binutils)")?;
    let mut hash = Sha256::new();
    hash.update(std::fs::read(&agent)?);
    let mut packs_found = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(packs)
        .with_context(|| {
            format!(
                "reading {} (run `cargo xtask build-packs`)",
                packs.display()
            )
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    for pack in entries {
        let name = pack.file_name().context("pack without a name")?;
        let to = packs_dir.join(name);
        std::fs::create_dir_all(&to)?;
        for file in ["manifest.json", "config.json", "pack.wasm"] {
            let from = pack.join(file);
            if from.exists() {
                std::fs::copy(&from, to.join(file))?;
                hash.update(name.as_encoded_bytes());
                hash.update(file);
                hash.update(std::fs::read(&from)?);
            }
        }
        packs_found += 1;
    }
    if packs_found == 0 {
        bail!(
            "no packs in {} (run `cargo xtask build-packs`)",
            packs.display()
        );
    }
    Ok(hex::encode(hash.finalize()))
}

/// Builds the Containerfile's `runtime-prebuilt` stage from `binary` and `packs`, unless an
/// image of the same content exists; returns its name.
fn prebuilt_image(root: &Path, binary: &Path, packs: &Path, base: &str) -> anyhow::Result<String> {
    let work = util::target_dir(root).join("image");
    let dist = work.join("dist");
    let content = stage_dist(binary, packs, &dist)?;
    let tag = format!("localhost/taskless-agent:prebuilt-{}", &content[..12]);
    if succeeds(Command::new("podman").args(["image", "exists", &tag])) {
        eprintln!("image: {tag} present");
        return Ok(tag);
    }
    // One checkout's earlier prebuilt images go when a new one is made.
    let checkout = hex::encode(Sha256::digest(root.as_os_str().as_encoded_bytes()));
    let label = format!("taskless-agent.checkout={}", &checkout[..12]);
    let old = output(Command::new("podman").args([
        "images",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]))
    .unwrap_or_default();
    run(podman()
        .args(["build", "--quiet", "-f"])
        .arg(root.join("Containerfile"))
        .args(["--target", "runtime-prebuilt", "--build-context"])
        .arg(format!("dist={}", dist.display()))
        .args([
            "--build-arg",
            &format!("BASE={base}"),
            "--label",
            &label,
            "-t",
            &tag,
        ])
        .arg(&dist))?;
    for name in old
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != tag)
    {
        let _ = util::succeeds(Command::new("podman").args(["rmi", name]));
    }
    Ok(tag)
}

/// What the tests use: the agent image from the host's debug build and the client image. Their
/// names go to `target/image/agent-image` and `target/image/client-image`; returns the agent's.
pub fn test_images(root: &Path) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let target = util::target_dir(root);
    let base = rootfs_image(&RUNTIME_BASE)?;
    let client = rootfs_image(&TEST_CLIENT)?;
    let agent = prebuilt_image(
        root,
        &target.join("debug/taskless-agent"),
        &target.join("packs"),
        &base,
    )?;
    write_name(&target.join("image/agent-image"), &agent)?;
    write_name(&target.join("image/client-image"), &client)?;
    eprintln!(
        "image: test images ready in {:.1} s: {agent}, {client}",
        started.elapsed().as_secs_f64()
    );
    Ok(agent)
}

fn write_name(path: &Path, name: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::File::create(path)?;
    writeln!(f, "{name}")?;
    Ok(())
}

/// `cargo xtask image`: the full build (default) or the runtime stage from the host's build.
pub fn run_image(root: &Path, prebuilt: bool, release: bool, tag: &str) -> anyhow::Result<()> {
    let base = rootfs_image(&RUNTIME_BASE)?;
    let target = util::target_dir(root);
    let built = if prebuilt {
        let profile = if release { "release" } else { "debug" };
        // `--bins`, as `cargo xtask test` builds: the same features, so nothing is rebuilt.
        let mut cargo = util::cargo();
        cargo.args(["build", "--bins"]);
        if release {
            cargo.arg("--release");
        }
        run(&mut cargo)?;
        crate::build_packs(root)?;
        if release {
            prebuilt_image(
                root,
                &target.join(profile).join("taskless-agent"),
                &target.join("packs"),
                &base,
            )?
        } else {
            // The debug build is what the tests use: make their images too.
            test_images(root)?
        }
    } else {
        let debian = rootfs_image(&BUILD_DEBIAN)?;
        let started = std::time::Instant::now();
        run(podman()
            .args(["build", "-f"])
            .arg(root.join("Containerfile"))
            .args(ulimit_args())
            .args(["--build-arg", &format!("BASE={base}")])
            .args(["--build-arg", &format!("DEBIAN={debian}")])
            .args(["-t", tag])
            .arg(root))?;
        eprintln!(
            "image: full build took {:.0} s",
            started.elapsed().as_secs_f64()
        );
        tag.to_owned()
    };
    if built != tag {
        run(Command::new("podman").args(["tag", &built, tag]))?;
    }
    let size =
        output(Command::new("podman").args(["image", "inspect", "--format", "{{.Size}}", tag]))?;
    eprintln!(
        "image: {tag} ({} MB)",
        size.trim().parse::<u64>().unwrap_or(0) / 1_000_000
    );
    Ok(())
}
