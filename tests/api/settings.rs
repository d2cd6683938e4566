//! Settings through the real binary: every variable the README documents is listed by
//! `orderlog serve --help` with the same default, a bad value stops the process before it
//! touches a database and names the variable, and a good one is used.

use std::process::{Command, Output};

use crate::helpers::{fresh_database, Backend};

pub(crate) fn orderlog(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = orderlog_command();
    command.args(args).envs(env.iter().copied());
    command.output().expect("the orderlog binary runs")
}

/// The real binary, with only the variables a test gives it: a developer's own
/// ORDERLOG_* stay out of it.
pub(crate) fn orderlog_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orderlog"));
    command.env("RUST_LOG", "warn");
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("ORDERLOG_")) {
        command.env_remove(name);
    }
    command
}

/// A port that was free a moment ago: it may be taken before the server binds it, a
/// race the suite accepts.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `(variable, default)` for each row of the README's configuration table.
fn documented_settings() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    readme
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let name = cells
                .next()?
                .strip_prefix("`ORDERLOG_")?
                .strip_suffix('`')?;
            let default = cells.next()?.trim_matches('`');
            Some((format!("ORDERLOG_{name}"), default.to_owned()))
        })
        .collect()
}

#[test]
fn serve_help_lists_every_documented_setting_with_its_default() {
    let documented = documented_settings();
    assert!(documented.len() >= 17, "the README lists {documented:?}");
    let help = orderlog(&["serve", "--help"], &[]);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for (name, default) in &documented {
        // A setting with no default (a secret, an optional path) is `(unset)` in the
        // README, and clap lists it without one.
        // clap shows a secret's variable as `[env: NAME]`, hiding its value.
        let listed = match default.as_str() {
            "(unset)" => [format!("[env: {name}=]\n"), format!("[env: {name}]\n")],
            default => [
                format!("[env: {name}=] [default: {default}]"),
                String::new(),
            ],
        };
        assert!(
            listed
                .iter()
                .any(|l| !l.is_empty() && help.contains(l.as_str())),
            "`{}` is missing from:\n{help}",
            listed[0].trim_end()
        );
    }
    assert_eq!(
        help.matches("[env: ORDERLOG_").count(),
        documented.len(),
        "every setting in the help is documented in the README:\n{help}"
    );
}

#[test]
fn a_bad_variable_stops_the_process_before_it_opens_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never.db");
    let url = format!("sqlite://{}", file.display());
    for (name, value) in [
        ("ORDERLOG_BODY_LIMIT", "lots"),
        ("ORDERLOG_IDEMPOTENCY_TTL", "0s"),
        ("ORDERLOG_WEBHOOK_RETRY_SCHEDULE", "5s,,2m"),
        ("ORDERLOG_LOG_FORMAT", "xml"),
    ] {
        for args in [&["migrate"][..], &[][..]] {
            let out = orderlog(args, &[("ORDERLOG_DATABASE_URL", &url), (name, value)]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{name}={value} {args:?}: {stderr}"
            );
            assert!(
                stderr.contains(&format!("invalid setting {name}={value:?}: ")),
                "{name}={value} {args:?}: {stderr}"
            );
            assert!(
                !file.exists(),
                "{name}={value} {args:?} created the database"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_taken_from_its_variable() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let url = fresh_database(backend).await;
        let out = orderlog(&["projections", "list"], &[("ORDERLOG_DATABASE_URL", &url)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{backend:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("order_summary"), "{backend:?}: {stdout}");
    }
}
