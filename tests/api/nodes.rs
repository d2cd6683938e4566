//! Real `orderlog serve` processes, for the tests that kill one.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{test_secret_key, ADMIN_TOKEN};

/// One `orderlog serve` process, killed however the test ends.
pub struct Node {
    pub name: String,
    pub base: String,
    child: Child,
}

impl Node {
    /// `orderlog serve` on `database_url` with the suite's token and key, its own port,
    /// and `settings` on top.
    pub fn start(name: &str, database_url: &str, settings: &[(&str, &str)]) -> Node {
        let port = crate::settings::free_port();
        let mut command = crate::settings::orderlog_command();
        let logs = || match std::env::var_os("TEST_LOG") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        };
        let key = test_secret_key().to_base64();
        let child = command
            .arg("serve")
            .env("ORDERLOG_DATABASE_URL", database_url)
            .env("ORDERLOG_BIND", format!("127.0.0.1:{port}"))
            .env("ORDERLOG_NODE_NAME", name)
            .env("ORDERLOG_BOOTSTRAP_TOKEN", ADMIN_TOKEN)
            .env("ORDERLOG_SECRET_KEY", &key)
            .env("ORDERLOG_DB_POOL_SIZE", "8")
            .env("ORDERLOG_NATS_URL", crate::helpers::nats_url())
            .envs(settings.iter().copied())
            .stdout(logs())
            .stderr(logs())
            .spawn()
            .expect("the orderlog binary starts");
        Node {
            name: name.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// Waits for `/ready`, failing at once if the process exits instead.
    pub async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = format!("{}/ready", self.base);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited before it was ready: {status}", self.name);
            }
            if let Ok(r) = reqwest::get(&ready).await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no lease released by the process itself; only PostgreSQL
    /// seeing its connections close.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the node");
        self.child.wait().expect("reap the node");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
