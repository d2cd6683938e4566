//! The README's curl walkthrough, run verbatim by bash against the real binary started
//! as the quickstart starts it: no settings at all, in an empty directory, so the
//! bootstrap token it reads is the one the first start wrote to `data/admin.token`. The
//! only change is the port, so that the test never collides with a developer's server.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::eventually;

fn walkthrough(port: u16) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let section = readme
        .split("## A walkthrough with curl")
        .nth(1)
        .expect("the README has its walkthrough");
    let script = section
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the walkthrough is a sh block");
    assert!(script.contains("TOKEN=$(cat data/admin.token)"), "{script}");
    script.replace("localhost:8080", &format!("localhost:{port}"))
}

/// Stops the server however the test ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_verbatim_with_the_bootstrap_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::settings::free_port();
    let mut command = crate::settings::orderlog_command();
    let _server = Server(
        command
            .current_dir(dir.path())
            .env("ORDERLOG_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the orderlog binary starts"),
    );
    let health = format!("http://127.0.0.1:{port}/health");
    eventually("the server to answer", Duration::from_secs(30), || async {
        reqwest::get(&health).await.map(|_| ())
    })
    .await;

    let out = Command::new("bash")
        .args(["-e", "-c", &walkthrough(port)])
        .current_dir(dir.path())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("\"code\":"),
        "every step of the walkthrough succeeds:\n{stdout}"
    );
    assert!(
        stdout.contains("\"status\":\"partially_refunded\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"event_type\":\"order.refunded\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"name\":\"storefront\""), "{stdout}");
    assert!(stdout.contains("\"token\":\"olk_"), "{stdout}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.path().join("data/admin.token");
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
