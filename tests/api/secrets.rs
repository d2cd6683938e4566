//! Signing secrets sealed at rest: never in the database in the clear, still signing
//! after a restart and after `orderlog secrets rotate-key` (run as the real binary,
//! interrupted or not), legacy plain text sealed at start, and PostgreSQL refusing to
//! start without a key.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use orderlog::delivery::store::SEALED_COLUMNS;
use orderlog::store::sealed::{self, KeyRing, SecretKey};
use orderlog::store::Database;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::deliveries::{subscribe, verify};
use crate::helpers::{
    expect_status, fresh_database, spawn_app, spawn_app_on, test_secret_key, Backend, TestApp,
};
use crate::on_both_backends;
use crate::receiver::Receiver;
use crate::settings::orderlog;

fn sqlite_dir(url: &str) -> PathBuf {
    Path::new(url.strip_prefix("sqlite://").unwrap())
        .parent()
        .unwrap()
        .to_owned()
}

fn key_file(url: &str) -> PathBuf {
    sqlite_dir(url).join("secret.key")
}

fn read_key(path: &Path) -> SecretKey {
    SecretKey::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The database file and its -wal and -shm, as bytes.
fn database_bytes(url: &str) -> Vec<(String, Vec<u8>)> {
    let db = url.strip_prefix("sqlite://").unwrap();
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = format!("{db}{suffix}");
            std::fs::read(&path).ok().map(|bytes| (path, bytes))
        })
        .collect()
}

/// Everything a secret could be found as: its text, its base64, its HMAC key.
fn forms_of(secret: &str) -> Vec<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap();
    vec![
        secret.as_bytes().to_vec(),
        encoded.as_bytes().to_vec(),
        BASE64.decode(encoded).unwrap(),
    ]
}

fn assert_nowhere_in_the_database(url: &str, what: &str, needles: &[Vec<u8>]) {
    let files = database_bytes(url);
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        for needle in needles {
            assert!(!contains(bytes, needle), "{what} found in {path}");
        }
    }
}

async fn rotate_secret(app: &TestApp, id: &str) -> String {
    let rotated = expect_status(
        app.post_empty(&format!("/v1/subscriptions/{id}/secret/rotate"))
            .await,
        StatusCode::OK,
    )
    .await;
    rotated["secret"].as_str().unwrap().to_owned()
}

/// Places an order and returns what the receiver got for it.
async fn delivery_of(
    app: &TestApp,
    receiver: &Receiver,
    order_id: &str,
) -> crate::receiver::Received {
    app.place_order(order_id).await;
    receiver
        .wait_until(Duration::from_secs(20), "a delivery of the order", |r| {
            r.iter().any(|r| r.body["aggregate_id"] == order_id)
        })
        .await
        .into_iter()
        .find(|r| r.body["aggregate_id"] == order_id)
        .unwrap()
}

/// The stored `secret` and `previous_secret` texts, as they are in the table.
async fn stored_secrets(url: &str) -> Vec<String> {
    let db = Database::connect(url, 1).await.unwrap();
    let Database::Sqlite(pool) = &db else {
        panic!("SQLite only")
    };
    let rows: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT secret, previous_secret FROM subscriptions")
            .fetch_all(pool)
            .await
            .unwrap();
    db.close().await;
    rows.into_iter()
        .flat_map(|(a, b)| a.into_iter().chain(b))
        .collect()
}

async fn only_creation_and_rotation_return_a_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start(200).await;
    let created = subscribe(&app, &receiver.url(), &["order.*"], json!({})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = created["secret"].as_str().unwrap().to_owned();
    let second = rotate_secret(&app, &id).await;
    for path in [
        "/v1/subscriptions".to_owned(),
        format!("/v1/subscriptions/{id}"),
    ] {
        let text = app.get(&path).await.text().await.unwrap();
        for secret in [&first, &second] {
            assert!(!text.contains(secret.as_str()), "{path} shows a secret");
        }
        assert!(!text.contains("whsec_"), "{path}: {text}");
        assert!(!text.contains("sealed:"), "{path}: {text}");
    }
    let patched = app
        .client
        .patch(app.url(&format!("/v1/subscriptions/{id}")))
        .json(&json!({"description": "x"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!patched.contains("whsec_"), "PATCH: {patched}");
}

on_both_backends!(only_creation_and_rotation_return_a_secret);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_nor_the_key_is_in_the_sqlite_files() {
    let url = fresh_database(Backend::Sqlite).await;
    let app = spawn_app_on(&url, |_| {}).await;
    let receiver = Receiver::start(200).await;
    let mut secrets = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let s = subscribe(&app, &receiver.url(), &["order.*"], json!({})).await;
        secrets.push(s["secret"].as_str().unwrap().to_owned());
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    secrets.push(rotate_secret(&app, &ids[0]).await);
    app.stop().await;

    let key_path = key_file(&url);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file's mode");
    }
    let key = read_key(&key_path);
    let stored = stored_secrets(&url).await;
    // Three current secrets and the one the rotation replaced, each sealed.
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert!(stored
        .iter()
        .all(|s| s.starts_with(&format!("sealed:v1:{}:", key.id()))));
    for secret in &secrets {
        assert_nowhere_in_the_database(&url, "a signing secret", &forms_of(secret));
    }
    let key_text = key.to_base64();
    assert_nowhere_in_the_database(
        &url,
        "the secret key",
        &[BASE64.decode(&key_text).unwrap(), key_text.into_bytes()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_after_a_restart_and_after_rotate_key() {
    let url = fresh_database(Backend::Sqlite).await;
    let receiver = Receiver::start(200).await;
    let app = spawn_app_on(&url, |_| {}).await;
    let created = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(verify(
        &secret,
        &delivery_of(&app, &receiver, "ord-1").await
    ));
    app.stop().await;

    let app = spawn_app_on(&url, |_| {}).await;
    assert!(
        verify(&secret, &delivery_of(&app, &receiver, "ord-2").await),
        "signed after a restart"
    );
    app.stop().await;

    let before = read_key(&key_file(&url));
    let out = orderlog(
        &["secrets", "rotate-key"],
        &[("ORDERLOG_DATABASE_URL", &url)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = read_key(&key_file(&url));
    assert_ne!(before, after, "the key file holds a new key");
    assert!(!key_source_next(&url).exists());
    assert!(stored_secrets(&url)
        .await
        .iter()
        .all(|s| s.starts_with(&format!("sealed:v1:{}:", after.id()))));

    let app = spawn_app_on(&url, |_| {}).await;
    assert!(
        verify(&secret, &delivery_of(&app, &receiver, "ord-3").await),
        "signed after a rotation of the key"
    );
    app.stop().await;
}

fn key_source_next(url: &str) -> PathBuf {
    sqlite_dir(url).join("secret.key.next")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rotation_is_finished_by_running_it_again() {
    let url = fresh_database(Backend::Sqlite).await;
    let receiver = Receiver::start(200).await;
    let app = spawn_app_on(&url, |_| {}).await;
    let a = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let b = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let a_old = a["secret"].as_str().unwrap().to_owned();
    let a_new = rotate_secret(&app, a["id"].as_str().unwrap()).await;
    let b_secret = b["secret"].as_str().unwrap().to_owned();
    app.stop().await;

    // A rotation stopped half way: the new key in `.next`, the current secrets already
    // under it, the previous one still under the old key.
    let old = read_key(&key_file(&url));
    let next = SecretKey::generate();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_source_next(&url))
            .unwrap();
        writeln!(file, "{}", next.to_base64()).unwrap();
    }
    let db = Database::connect(&url, 1).await.unwrap();
    let ring = KeyRing::new(next.clone()).with_opening(old.clone());
    let done = sealed::reseal(&db, &ring, &SEALED_COLUMNS[..1])
        .await
        .unwrap();
    assert_eq!(done.resealed, 2);
    db.close().await;
    let stored = stored_secrets(&url).await;
    let under = |key: &SecretKey| {
        stored
            .iter()
            .filter(|s| s.starts_with(&format!("sealed:v1:{}:", key.id())))
            .count()
    };
    assert_eq!((under(&next), under(&old)), (2, 1), "{stored:?}");

    let out = orderlog(
        &["secrets", "rotate-key"],
        &[("ORDERLOG_DATABASE_URL", &url)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_key(&key_file(&url)), next, "the rotation kept its key");
    assert!(!key_source_next(&url).exists());
    assert!(stored_secrets(&url)
        .await
        .iter()
        .all(|s| s.starts_with(&format!("sealed:v1:{}:", next.id()))));

    let app = spawn_app_on(&url, |_| {}).await;
    app.place_order("ord-1").await;
    let received = receiver
        .wait_until(Duration::from_secs(20), "both deliveries", |r| r.len() >= 2)
        .await;
    let signed_by = |secret: &str| received.iter().filter(|r| verify(secret, r)).count();
    assert_eq!(signed_by(&a_new), 1);
    assert_eq!(
        signed_by(&a_old),
        1,
        "the replaced secret signs during the overlap"
    );
    assert_eq!(signed_by(&b_secret), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_secrets_of_an_older_database_are_sealed_at_start() {
    let url = fresh_database(Backend::Sqlite).await;
    let receiver = Receiver::start(200).await;
    let app = spawn_app_on(&url, |_| {}).await;
    let created = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    app.stop().await;
    {
        let db = Database::connect(&url, 1).await.unwrap();
        let Database::Sqlite(pool) = &db else {
            unreachable!()
        };
        sqlx::query("UPDATE subscriptions SET secret = $1 WHERE id = $2")
            .bind(&secret)
            .bind(&id)
            .execute(pool)
            .await
            .unwrap();
        db.close().await;
    }
    assert_eq!(stored_secrets(&url).await, vec![secret.clone()]);

    let app = spawn_app_on(&url, |_| {}).await;
    assert!(verify(
        &secret,
        &delivery_of(&app, &receiver, "ord-1").await
    ));
    app.stop().await;
    let stored = stored_secrets(&url).await;
    assert!(stored[0].starts_with("sealed:v1:"), "{stored:?}");
    assert_nowhere_in_the_database(&url, "the legacy secret", &forms_of(&secret));
}

/// A key this server does not hold fails that subscription alone: it is listed with
/// the reason, not delivered, and the others go on; rotating its secret recovers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rotates_to_a_new_key_and_a_server_without_it_says_so() {
    let url = fresh_database(Backend::Postgres).await;
    let receiver = Receiver::start(200).await;
    let app = spawn_app_on(&url, |_| {}).await;
    let created = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    app.stop().await;

    let old = test_secret_key().to_base64();
    let out = orderlog(
        &["secrets", "rotate-key"],
        &[
            ("ORDERLOG_DATABASE_URL", &url),
            ("ORDERLOG_SECRET_KEY", &old),
        ],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = SecretKey::parse(stdout.lines().last().unwrap()).expect("the new key, last");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&old));

    // The old key alone no longer opens it: a clear error for that subscription only.
    let app = spawn_app_on(&url, |_| {}).await;
    let nats = expect_status(
        app.post(
            "/v1/subscriptions",
            &json!({"kind": "nats", "event_types": ["order.*"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let list = expect_status(app.get("/v1/subscriptions").await, StatusCode::OK).await;
    let shown: Vec<&Value> = list["subscriptions"].as_array().unwrap().iter().collect();
    assert_eq!(shown.len(), 2);
    let broken = shown.iter().find(|s| s["id"] == id.as_str()).unwrap();
    assert_eq!(
        broken["secret_error"]["code"], "sealed_unknown_key",
        "{broken}"
    );
    let detail = broken["secret_error"]["detail"].as_str().unwrap();
    assert!(detail.contains(&new.id().to_string()), "{detail}");
    assert!(
        shown
            .iter()
            .any(|s| s["id"] == nats["id"] && s.get("secret_error").is_none()),
        "{list}"
    );
    app.stop().await;

    // The new key as the key, the old one as previous: signed as before.
    let app = spawn_app_on(&url, |s| {
        s.secret_key = Some(new.clone());
        s.secret_key_previous = Some(test_secret_key());
    })
    .await;
    assert!(verify(
        &secret,
        &delivery_of(&app, &receiver, "ord-1").await
    ));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_to_start_without_a_key_and_says_how_to_make_one() {
    let url = fresh_database(Backend::Postgres).await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_orderlog"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("ORDERLOG_")) {
        command.env_remove(name);
    }
    let mut child = command
        .args(["serve"])
        .env("RUST_LOG", "warn")
        .env("ORDERLOG_DATABASE_URL", &url)
        .env("ORDERLOG_BIND", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started without a key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("ORDERLOG_SECRET_KEY"), "{stderr}");
    assert!(stderr.contains("orderlog secrets generate-key"), "{stderr}");

    let out = orderlog(&["secrets", "generate-key"], &[]);
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    assert_eq!(key.lines().count(), 1);
    SecretKey::parse(&key).expect("a usable key");
}
