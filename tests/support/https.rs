//! HTTPS as a client sees it: curl, trusting only a test CA (`--cacert`), so a server
//! certificate the CA did not sign, or one for another name, fails.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `GET url` with curl trusting `ca` alone; the body of a 2xx answer, else what curl said.
pub fn get(url: &str, ca: &Path) -> Result<String, String> {
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(ca)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run curl (scripts/setup.sh installs it): {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

/// [`get`] until it succeeds or `timeout` passes; the last error then.
pub fn wait(url: &str, ca: &Path, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match get(url, ca) {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{url} not served after {timeout:?}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}
