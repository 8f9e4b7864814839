//! The command line, completed from a TOML configuration file and `TASKLESS_*` environment
//! variables, for every option of every command, without a list of them: the options are read
//! from the clap definition in [`crate::cli`], so an option added there is configurable too.
//!
//! - A file key is an option's long name, with `-` or `_` (`state_dir`, `state-dir`); an
//!   environment variable is `TASKLESS_` and the long name in capitals with `_`
//!   (`TASKLESS_STATE_DIR`), plus the names of [`ENV_ALIASES`].
//! - The command line wins over the environment, which wins over the file. An option is taken
//!   from a lower layer only when no higher one set it or an option it conflicts with (`all` in
//!   the file gives way to `--pid` on the command line).
//! - Values from the file and the environment are handed to clap as `--name=value` arguments, so
//!   they are parsed and checked exactly as on the command line; an error names the file and
//!   the key, or the variable.
//! - Unknown keys in the file are errors; keys that are options of another command than the
//!   one run (`all` for `replay`) are left alone. Unknown `TASKLESS_*` variables are ignored.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory as _, FromArgMatches as _};

use crate::cli::Cli;

/// The file read when neither `--config` nor `TASKLESS_CONFIG` names one; missing is fine.
pub const DEFAULT_FILE: &str = "/etc/taskless-agent/config.toml";

/// The prefix of the environment variables.
pub const ENV_PREFIX: &str = "TASKLESS_";

/// The id of the option naming the file (`--config`), which the file itself cannot set.
const CONFIG_ID: &str = "config";

/// Further variable names for some options, from the Taskless loader: `(variable, long name)`.
/// The option's own `TASKLESS_<NAME>` wins when both are set.
pub const ENV_ALIASES: [(&str, &str); 2] = [
    ("TASKLESS_LOG_LEVEL", "log"),
    ("TASKLESS_DIRECTORY", "packs"),
];

/// Why the command line could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// clap's own answer: a usage error, `--help`, `--version`.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The file could not be read.
    #[error("configuration file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        reason: String,
    },
    /// The file is not TOML.
    #[error("configuration file {}: not valid TOML: {reason}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's reason, with the line.
        reason: String,
    },
    /// A key that is no option of any command.
    #[error(
        "configuration file {}: unknown key `{key}`: not an option of taskless-agent (`taskless-agent --help` lists them; keys are their long names)",
        path.display()
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A value that clap, or the file's shape, refused.
    #[error("{origin}: {reason}")]
    BadValue {
        /// Where the value came from: the file and key, or the variable.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl SettingsError {
    /// The exit code: clap's for its own errors (0 for help), 2 (usage) for the others.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Clap(e) => e.exit_code(),
            _ => 2,
        }
    }
}

/// Where an option's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    Env(String),
    File(PathBuf, String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(var) => write!(f, "environment variable {var}"),
            Self::File(path, key) => {
                write!(f, "configuration file {}: key `{key}`", path.display())
            }
        }
    }
}

/// The command line of this process, completed from the environment and the configuration file.
///
/// # Errors
/// A [`SettingsError`]; the caller prints it and exits with [`SettingsError::exit_code`].
pub fn parse() -> Result<Cli, SettingsError> {
    parse_from(std::env::args_os(), &|name| std::env::var_os(name))
}

/// [`parse`] for given arguments (the program name first) and environment.
///
/// # Errors
/// As [`parse`].
pub fn parse_from(
    args: impl IntoIterator<Item = impl Into<OsString>>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Cli, SettingsError> {
    let matches = complete(Cli::command(), args, env)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The environment variable of an option (`TASKLESS_STATE_DIR` for `--state-dir`).
#[must_use]
pub fn env_name(long: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        long.replace('-', "_").to_ascii_uppercase()
    )
}

/// The file key of an option (`state_dir` for `--state-dir`); `-` is accepted too.
#[must_use]
pub fn key_name(long: &str) -> String {
    long.replace('-', "_")
}

/// Parses `args` with `cmd`, completed from `env` and the configuration file: the generic part,
/// for any clap command.
///
/// # Errors
/// As [`parse`].
pub fn complete(
    mut cmd: Command,
    args: impl IntoIterator<Item = impl Into<OsString>>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<ArgMatches, SettingsError> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    cmd.build();
    // What the command line itself says, right or wrong: the command run, the options given.
    let given = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&args)?;
    let (leaf, leaf_matches) = leaf(&cmd, &given);
    let mut set: BTreeSet<String> = leaf
        .get_arguments()
        .filter(|a| {
            leaf_matches.value_source(a.get_id().as_str())
                == Some(clap::parser::ValueSource::CommandLine)
        })
        .map(|a| a.get_id().to_string())
        .collect();

    let file = config_file(&cmd, leaf_matches, env)?;
    let mut extra: Vec<OsString> = Vec::new();
    let mut origins: Vec<(String, Origin)> = Vec::new();
    // The environment first, then the file: each only fills what is still free.
    for layer in [Layer::Env, Layer::File] {
        let mut taken = Vec::new();
        for arg in leaf.get_arguments().filter(|a| configurable(a)) {
            let id = arg.get_id().as_str();
            if set.contains(id) || conflicts_with_set(leaf, arg, &set) {
                continue;
            }
            let Some(long) = arg.get_long() else {
                continue;
            };
            let found = match layer {
                Layer::Env => from_env(long, env),
                Layer::File => file.as_ref().and_then(|f| {
                    f.values
                        .get(&key_name(long))
                        .map(|(key, v)| (Origin::File(f.path.clone(), key.clone()), v.clone()))
                }),
            };
            let Some((origin, value)) = found else {
                continue;
            };
            let values =
                arguments(arg, long, &value).map_err(|reason| SettingsError::BadValue {
                    origin: origin.to_string(),
                    reason,
                })?;
            if values.is_empty() {
                continue;
            }
            extra.extend(values);
            origins.push((long.to_owned(), origin));
            taken.push(id.to_owned());
        }
        set.extend(taken);
    }

    // The added options go before a `--`, after everything else (so after the subcommand).
    let mut full = args;
    let at = full
        .iter()
        .skip(1)
        .position(|a| a == "--")
        .map_or(full.len(), |i| i + 1);
    full.splice(at..at, extra);
    cmd.try_get_matches_from_mut(&full)
        .map_err(|e| attribute(e, &origins))
}

#[derive(Clone, Copy)]
enum Layer {
    Env,
    File,
}

/// A file's options: normalised key → (key as written, value).
struct File {
    path: PathBuf,
    values: BTreeMap<String, (String, Value)>,
}

/// A value from the file or the environment.
#[derive(Clone, Debug)]
enum Value {
    Toml(toml::Value),
    Env(OsString),
}

/// The subcommand that runs, and its matches.
fn leaf<'a>(cmd: &'a Command, matches: &'a ArgMatches) -> (&'a Command, &'a ArgMatches) {
    match matches.subcommand() {
        Some((name, sub)) => match cmd.find_subcommand(name) {
            Some(c) => leaf(c, sub),
            None => (cmd, matches),
        },
        None => (cmd, matches),
    }
}

/// An option a file or variable may set: one with a long name that takes values or is a flag.
fn configurable(arg: &Arg) -> bool {
    arg.get_long().is_some()
        && arg.get_id() != CONFIG_ID
        && matches!(
            arg.get_action(),
            ArgAction::Set
                | ArgAction::Append
                | ArgAction::SetTrue
                | ArgAction::SetFalse
                | ArgAction::Count
        )
}

/// Whether `arg` conflicts with an option already set, in either direction, or shares a group
/// of exclusive options with one.
fn conflicts_with_set(cmd: &Command, arg: &Arg, set: &BTreeSet<String>) -> bool {
    let id = arg.get_id();
    let grouped = cmd.get_groups().any(|g| {
        let members: Vec<&clap::Id> = g.get_args().collect();
        !g.clone().is_multiple()
            && members.contains(&id)
            && members.iter().any(|m| set.contains(m.as_str()))
    });
    grouped
        || cmd
            .get_arg_conflicts_with(arg)
            .iter()
            .any(|c| set.contains(c.get_id().as_str()))
        || cmd.get_arguments().any(|other| {
            set.contains(other.get_id().as_str())
                && cmd
                    .get_arg_conflicts_with(other)
                    .iter()
                    .any(|c| c.get_id() == arg.get_id())
        })
}

/// The option's variable, or an alias's.
fn from_env(long: &str, env: &dyn Fn(&str) -> Option<OsString>) -> Option<(Origin, Value)> {
    let own = env_name(long);
    std::iter::once(own.as_str())
        .chain(
            ENV_ALIASES
                .iter()
                .filter(|(_, l)| *l == long)
                .map(|(var, _)| *var),
        )
        .find_map(|var| env(var).map(|v| (Origin::Env(var.to_owned()), Value::Env(v))))
}

/// The configuration file: `--config`, else `TASKLESS_CONFIG`, else [`DEFAULT_FILE`] if it
/// exists.
fn config_file(
    cmd: &Command,
    given: &ArgMatches,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Option<File>, SettingsError> {
    let named = given
        .try_get_one::<PathBuf>(CONFIG_ID)
        .ok()
        .flatten()
        .cloned()
        .or_else(|| env(&env_name(CONFIG_ID)).map(PathBuf::from));
    let (path, explicit) = match named {
        Some(p) => (p, true),
        None => (PathBuf::from(DEFAULT_FILE), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SettingsError::Read {
                path,
                reason: e.to_string(),
            });
        }
    };
    read_file(cmd, &path, &text).map(Some)
}

/// Parses a file's text; keys checked against every option of every command of `cmd`.
fn read_file(cmd: &Command, path: &Path, text: &str) -> Result<File, SettingsError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| SettingsError::Syntax {
            path: path.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })?;
    let known = all_keys(cmd);
    let mut values = BTreeMap::new();
    for (key, value) in table {
        let norm = key_name(&key);
        if norm == CONFIG_ID {
            return Err(SettingsError::BadValue {
                origin: Origin::File(path.to_owned(), key).to_string(),
                reason: "a configuration file cannot name another one".into(),
            });
        }
        if !known.contains(&norm) {
            return Err(SettingsError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        if let Some((first, _)) = values.get(&norm) {
            return Err(SettingsError::BadValue {
                origin: Origin::File(path.to_owned(), key).to_string(),
                reason: format!("the same option as `{first}`"),
            });
        }
        values.insert(norm, (key, Value::Toml(value)));
    }
    Ok(File {
        path: path.to_owned(),
        values,
    })
}

/// The keys of every configurable option of `cmd` and its subcommands.
#[must_use]
pub fn all_keys(cmd: &Command) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = cmd
        .get_arguments()
        .filter(|a| configurable(a))
        .filter_map(Arg::get_long)
        .map(key_name)
        .collect();
    for sub in cmd.get_subcommands() {
        keys.extend(all_keys(sub));
    }
    keys
}

/// The command-line arguments that say what `value` says for option `long`.
fn arguments(arg: &Arg, long: &str, value: &Value) -> Result<Vec<OsString>, String> {
    let flag = |on: bool, times: usize| -> Vec<OsString> {
        if on {
            vec![OsString::from(format!("--{long}")); times]
        } else {
            Vec::new()
        }
    };
    let action = arg.get_action();
    match (action, value) {
        (ArgAction::SetTrue | ArgAction::SetFalse, Value::Toml(v)) => {
            let on = v
                .as_bool()
                .ok_or_else(|| format!("expected true or false, found {}", describe(v)))?;
            Ok(flag(on == matches!(action, ArgAction::SetTrue), 1))
        }
        (ArgAction::SetTrue | ArgAction::SetFalse, Value::Env(v)) => {
            let on = match v.to_string_lossy().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "" | "0" | "false" | "no" | "off" => false,
                other => return Err(format!("expected true or false, found {other:?}")),
            };
            Ok(flag(on == matches!(action, ArgAction::SetTrue), 1))
        }
        (ArgAction::Count, Value::Toml(v)) => {
            let n = v
                .as_integer()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("expected a count, found {}", describe(v)))?;
            Ok(flag(true, n))
        }
        (ArgAction::Count, Value::Env(v)) => {
            let n: usize = v
                .to_string_lossy()
                .parse()
                .map_err(|_| format!("expected a count, found {v:?}"))?;
            Ok(flag(true, n))
        }
        (ArgAction::Append, Value::Toml(toml::Value::Array(items))) => items
            .iter()
            .map(|item| scalar(item).map(|s| option(long, &s)))
            .collect(),
        (_, Value::Toml(v)) => Ok(vec![option(long, &scalar(v)?)]),
        // Several values in one variable: comma-separated.
        (ArgAction::Append, Value::Env(v)) => Ok(v
            .to_string_lossy()
            .split(',')
            .map(|s| option(long, s.trim()))
            .collect()),
        (_, Value::Env(v)) => {
            let mut a = OsString::from(format!("--{long}="));
            a.push(v);
            Ok(vec![a])
        }
    }
}

fn option(long: &str, value: &str) -> OsString {
    OsString::from(format!("--{long}={value}"))
}

/// A TOML value as the text of one command-line value.
fn scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a single value, found {}",
            describe(other)
        )),
    }
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(_) => "a table".into(),
        toml::Value::Array(_) => "a list".into(),
        other => format!("{} {other}", other.type_str()),
    }
}

/// clap's error, with the file key or variable that gave the option it is about.
fn attribute(e: clap::Error, origins: &[(String, Origin)]) -> SettingsError {
    use clap::error::{ContextKind, ContextValue};
    let named = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => Some(v.join(" ")),
        _ => None,
    };
    let about: Vec<String> = [ContextKind::InvalidArg, ContextKind::PriorArg]
        .into_iter()
        .filter_map(named)
        .collect();
    let from: Vec<&Origin> = origins
        .iter()
        .filter(|(long, _)| {
            let flag = format!("--{long}");
            about
                .iter()
                .any(|a| a.split([' ', '=', '<']).next() == Some(flag.as_str()))
        })
        .map(|(_, o)| o)
        .collect();
    if from.is_empty() {
        return SettingsError::Clap(e);
    }
    let text = e.to_string();
    let reason = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let origin = from
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ");
    SettingsError::BadValue { origin, reason }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
