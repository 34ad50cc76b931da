//! containerd, the runtime of Kubernetes nodes, on a private socket with its own root
//! and state directories, so tests never touch a system containerd; `ctr` talks to it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// containerd on a private socket, root and state directory; stopped when dropped.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Containerd {
    pub fn start() -> Containerd {
        // Short path: the socket's must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("ctrd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/sock\"\n[ttrpc]\n  address = \"{d}/sock.ttrpc\"\n\
             [debug]\n  address = \"{d}/debug.sock\"\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot run containerd; run scripts/setup.sh --deps-only");
        let c = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.ctr(&["version"]).status.code() != Some(0) {
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("sock"))
            .args(["--namespace", "imgbuild-test"])
            .args(args)
            .output()
            .expect("cannot run ctr")
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&self.ctr(&["task", "ls", "-q"]).stdout).lines() {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", line.trim()]);
        }
        std::thread::sleep(Duration::from_millis(500));
        for line in String::from_utf8_lossy(&self.ctr(&["task", "ls", "-q"]).stdout).lines() {
            let _ = self.ctr(&["task", "rm", "-f", line.trim()]);
        }
        for line in String::from_utf8_lossy(&self.ctr(&["containers", "ls", "-q"]).stdout).lines() {
            let _ = self.ctr(&["containers", "rm", line.trim()]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots may still be mounted if a task was stuck: unmount before removing.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o '{} [^ ]*' /proc/mounts | cut -d' ' -f1 | sort -r | xargs -r umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}

impl Containerd {
    /// Imports an OCI archive (as `imgbuild build --output oci-archive:FILE` writes it)
    /// and unpacks it for the host platform; returns the image name, `NAME:TAG` of the
    /// archive's tag under `base_name`.
    pub fn import(&self, archive: &Path, base_name: &str) -> String {
        self.ctr_ok(&[
            "images",
            "import",
            "--base-name",
            base_name,
            &archive.display().to_string(),
        ]);
        let names = self.ctr_ok(&["images", "ls", "-q"]);
        names
            .lines()
            .find(|n| n.starts_with(&format!("{base_name}:")))
            .unwrap_or_else(|| panic!("no image {base_name}:* after import; images:\n{names}"))
            .to_string()
    }

    /// `ctr run --rm` of `image` as container `id`: the command's output, which must succeed.
    pub fn run_ok(&self, image: &str, id: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run", "--rm", image, id];
        args.extend_from_slice(cmd);
        self.ctr_ok(&args)
    }
}
