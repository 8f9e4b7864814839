use std::{collections::HashMap, ffi::OsString, path::PathBuf};

use clap::{Arg, ArgAction, CommandFactory as _};

use super::*;
use crate::cli::Command as Sub;

/// A configuration file in a fresh directory, removed on drop.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "taskless-settings-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }

    fn arg(&self) -> String {
        format!("--config={}", self.path.display())
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
    let map: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
        .collect();
    move |name| map.get(name).cloned()
}

fn no_env(_: &str) -> Option<OsString> {
    None
}

fn parse_with(args: &[&str], env: &dyn Fn(&str) -> Option<OsString>) -> Cli {
    let mut full = vec!["taskless-agent"];
    full.extend_from_slice(args);
    parse_from(full, env).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn error_with(args: &[&str], env: &dyn Fn(&str) -> Option<OsString>) -> String {
    let mut full = vec!["taskless-agent"];
    full.extend_from_slice(args);
    match parse_from(full, env) {
        Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        }
    }
}

#[test]
fn file_values_reach_the_options_through_clap() {
    let f = ConfigFile::new(
        r#"
        pid = [11, 12]
        follow = true
        ringbuf-size = 65536
        stats_interval = 5
        probe_set = "empty"
        packs = "/opt/packs"
        max_body = 100
        log = "debug"
        server_side = true
        "#,
    );
    let cli = parse_with(&[&f.arg()], &no_env);
    assert_eq!(cli.run.pids, vec![11, 12]);
    assert!(cli.run.follow && !cli.run.all);
    assert_eq!(cli.run.ringbuf_size, 65536);
    assert_eq!(cli.run.stats_interval, 5);
    assert_eq!(cli.run.probe_set, crate::config::ProbeSet::Empty);
    assert_eq!(cli.run.pack.packs, Some(PathBuf::from("/opt/packs")));
    assert_eq!(cli.run.pack.max_body, 100);
    assert!(cli.run.flows.server_side);
    assert_eq!(cli.log, "debug");
    // Untouched options keep their defaults.
    assert_eq!(cli.run.pack.queue, 4096);
}

#[test]
fn command_line_wins_over_environment_which_wins_over_file() {
    let f = ConfigFile::new("max_body = 1\nqueue = 1\nworkers = 1\nlog = \"warn\"\n");
    let env = env_of(&[
        ("TASKLESS_MAX_BODY", "2"),
        ("TASKLESS_QUEUE", "2"),
        ("TASKLESS_LOG_LEVEL", "info"),
    ]);
    let cli = parse_with(&[&f.arg(), "--all", "--max-body", "3"], &env);
    assert_eq!(cli.run.pack.max_body, 3, "command line");
    assert_eq!(cli.run.pack.queue, 2, "environment");
    assert_eq!(cli.run.pack.workers, 1, "file");
    assert_eq!(cli.log, "info", "TASKLESS_LOG_LEVEL over the file");
    // The option's own variable wins over the alias.
    let env = env_of(&[("TASKLESS_LOG_LEVEL", "info"), ("TASKLESS_LOG", "trace")]);
    assert_eq!(parse_with(&[&f.arg(), "--all"], &env).log, "trace");
    // TASKLESS_DIRECTORY is the packs directory.
    let env = env_of(&[("TASKLESS_DIRECTORY", "/srv/packs")]);
    assert_eq!(
        parse_with(&["--all"], &env).run.pack.packs,
        Some(PathBuf::from("/srv/packs"))
    );
}

#[test]
fn an_option_set_higher_up_silences_the_ones_it_conflicts_with() {
    // The DaemonSet's file says `all`; `--pid` on the command line wins, without a conflict.
    let f = ConfigFile::new("all = true\n");
    let cli = parse_with(&[&f.arg(), "--pid", "7"], &no_env);
    assert_eq!(cli.run.pids, vec![7]);
    assert!(!cli.run.all);
    let cli = parse_with(&[&f.arg()], &env_of(&[("TASKLESS_PID", "8,9")]));
    assert_eq!(cli.run.pids, vec![8, 9]);
    assert!(!cli.run.all);
    assert!(parse_with(&[&f.arg()], &no_env).run.all);
}

#[test]
fn flags_from_the_environment() {
    let cli = parse_with(&[], &env_of(&[("TASKLESS_ALL", "true")]));
    assert!(cli.run.all);
    let cli = parse_with(
        &["--pid", "1"],
        &env_of(&[("TASKLESS_FOLLOW", "0"), ("TASKLESS_REQUIRE_TLS", "yes")]),
    );
    assert!(!cli.run.follow && cli.run.require_tls);
    let e = error_with(&["--all"], &env_of(&[("TASKLESS_SERVER_SIDE", "maybe")]));
    assert!(
        e.contains("environment variable TASKLESS_SERVER_SIDE"),
        "{e}"
    );
    assert!(e.contains("maybe"), "{e}");
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_the_file() {
    let f = ConfigFile::new("all = true\nringbuf = 4096\n");
    let e = error_with(&[&f.arg()], &no_env);
    assert!(e.contains("unknown key `ringbuf`"), "{e}");
    assert!(e.contains(&f.path.display().to_string()), "{e}");
    // Tables are not options either.
    let f = ConfigFile::new("[packs]\ndir = \"/x\"\n");
    let e = error_with(&[&f.arg(), "--all"], &no_env);
    assert!(e.contains("key `packs`") && e.contains("a table"), "{e}");
}

#[test]
fn bad_values_are_clap_errors_naming_the_key_and_the_file() {
    for (text, key, says) in [
        (
            "ringbuf_size = \"big\"\n",
            "ringbuf_size",
            "invalid value 'big'",
        ),
        ("ringbuf-size = -1\n", "ringbuf-size", "invalid value '-1'"),
        (
            "probe_set = \"fast\"\n",
            "probe_set",
            "invalid value 'fast'",
        ),
        ("all = \"yes\"\n", "all", "expected true or false"),
        ("pid = [1, \"x\"]\n", "pid", "invalid value 'x'"),
        ("workers = [1, 2]\n", "workers", "a list"),
    ] {
        let f = ConfigFile::new(text);
        let e = error_with(&[&f.arg()], &no_env);
        let origin = format!("configuration file {}: key `{key}`", f.path.display());
        assert!(e.contains(&origin), "{text}: {e}");
        assert!(e.contains(says), "{text}: {e}");
    }
    let e = error_with(&["--all"], &env_of(&[("TASKLESS_QUEUE", "lots")]));
    assert!(
        e.starts_with("environment variable TASKLESS_QUEUE: ") && e.contains("'lots'"),
        "{e}"
    );
    // Two options of the file that conflict: clap's error, naming both keys.
    let f = ConfigFile::new("all = true\npid = [3]\n");
    let e = error_with(&[&f.arg()], &no_env);
    assert!(e.contains("key `all`") && e.contains("key `pid`"), "{e}");
    assert!(e.contains("cannot be used with"), "{e}");
    // The same option twice.
    let f = ConfigFile::new("state_dir = \"/a\"\nstate-dir = \"/b\"\n");
    let e = error_with(&[&f.arg(), "--all"], &no_env);
    assert!(e.contains("the same option"), "{e}");
    let f = ConfigFile::new("all = tru\n");
    let e = error_with(&[&f.arg()], &no_env);
    assert!(e.contains("not valid TOML") && e.contains("line 1"), "{e}");
}

#[test]
fn a_missing_file_is_an_error_only_when_named() {
    let e = error_with(
        &["--config", "/nonexistent/taskless.toml", "--all"],
        &no_env,
    );
    assert!(
        e.contains("configuration file /nonexistent/taskless.toml: "),
        "{e}"
    );
    let e = error_with(
        &["--all"],
        &env_of(&[("TASKLESS_CONFIG", "/nonexistent/env.toml")]),
    );
    assert!(e.contains("/nonexistent/env.toml"), "{e}");
    // The default file, where it is absent (as in the test environment): nothing to read.
    if !std::path::Path::new(DEFAULT_FILE).exists() {
        assert!(parse_with(&["--all"], &no_env).run.all);
    }
}

#[test]
fn subcommands_take_the_options_they_have_and_leave_the_others() {
    let f =
        ConfigFile::new("all = true\nmax_body = 77\nhar = \"/tmp/x.har\"\nserver_side = true\n");
    // Options follow the subcommand (`args_conflicts_with_subcommands`), --config too.
    let cli = parse_with(&["replay", &f.arg()], &no_env);
    let Some(Sub::Replay(r)) = cli.command else {
        panic!("{cli:?}");
    };
    assert_eq!(r.pack.max_body, 77);
    assert_eq!(r.har, Some(PathBuf::from("/tmp/x.har")));
    assert!(r.flows.server_side);
    // The command line's positional wins over the file's `har`: both are the group's, so the
    // file's gives way.
    let cli = parse_with(&["replay", &f.arg(), "/rec"], &no_env);
    let Some(Sub::Replay(r)) = cli.command else {
        panic!("{cli:?}");
    };
    assert_eq!(r.dir, Some(PathBuf::from("/rec")));
    assert_eq!(r.har, None);
    let cli = parse_with(&["check", &f.arg()], &no_env);
    let Some(Sub::Check(c)) = cli.command else {
        panic!("{cli:?}");
    };
    assert_eq!(c.pack.max_body, 77);
}

#[test]
fn every_long_option_is_a_key_and_a_variable() {
    let mut cmd = Cli::command();
    cmd.build();
    let keys = all_keys(&cmd);
    for key in [
        "pid",
        "all",
        "follow",
        "log",
        "packs",
        "state_dir",
        "ringbuf_size",
        "pack_timeout_ms",
        "har",
        "fixture",
    ] {
        assert!(keys.contains(key), "{key} missing from {keys:?}");
    }
    assert!(!keys.contains("config") && !keys.contains("help") && !keys.contains("version"));
    assert_eq!(env_name("state-dir"), "TASKLESS_STATE_DIR");
}

#[test]
fn an_option_added_to_the_command_later_is_configurable_without_code() {
    // Any clap command: here ours with one more option, as another change to cli.rs would add.
    let cmd = Cli::command().arg(
        Arg::new("new_thing")
            .long("new-thing")
            .value_parser(clap::value_parser!(u16))
            .action(ArgAction::Set),
    );
    let f = ConfigFile::new("new_thing = 443\n");
    let m = complete(cmd.clone(), ["taskless-agent", &f.arg(), "--all"], &no_env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.get_one::<u16>("new_thing"), Some(&443));
    let m = complete(
        cmd.clone(),
        ["taskless-agent", "--all"],
        &env_of(&[("TASKLESS_NEW_THING", "8443")]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.get_one::<u16>("new_thing"), Some(&8443));
    let f = ConfigFile::new("new_thing = 70000\n");
    let e =
        complete(cmd, ["taskless-agent", &f.arg(), "--all"], &no_env).expect_err("out of range");
    assert!(e.to_string().contains("key `new_thing`"), "{e}");
}

#[test]
fn help_and_usage_errors_stay_claps() {
    let e = parse_from(["taskless-agent", "--help"], &no_env).expect_err("help");
    assert_eq!(e.exit_code(), 0);
    assert!(e.to_string().contains("TASKLESS_LOG_LEVEL"), "{e}");
    let e = parse_from(["taskless-agent", "--all", "--pid", "1"], &no_env).expect_err("conflict");
    assert!(matches!(e, SettingsError::Clap(_)), "{e}");
}

#[test]
fn the_packs_cpu_budget_is_a_number_of_cpus_from_any_layer() {
    let f = ConfigFile::new("all = true\npack_cpu = 1.5\n");
    assert!((parse_with(&[&f.arg()], &no_env).run.pack.pack_cpu - 1.5).abs() < f64::EPSILON);
    let env = env_of(&[("TASKLESS_PACK_CPU", "0")]);
    assert!(parse_with(&[&f.arg()], &env).run.pack.pack_cpu.abs() < f64::EPSILON);
    // The default: 5% of the machine's CPUs, at least a quarter of one.
    assert!(parse_with(&["--all"], &no_env).run.pack.pack_cpu >= 0.25);
    for bad in ["-1", "NaN", "inf", "half"] {
        let e = error_with(&["--all", &format!("--pack-cpu={bad}")], &no_env);
        assert!(e.contains("is not a number of CPUs"), "{bad}: {e}");
    }
}
