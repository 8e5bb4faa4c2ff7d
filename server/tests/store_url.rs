//! The database URL out of the process list: `--store-file PATH` (refused, naming the file, when
//! its group or others have access) and the `SHOAL_STORE` environment variable. The real binary on
//! a real PostgreSQL; the password is checked absent from its command line and its log.

mod common;

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use shoal_proto::Status;
use shoal_testkit::PgCluster;

/// The test cluster trusts every local connection, so the password is never checked: it is
/// there to be looked for.
const PASSWORD: &str = "Pw-4bX9-never-shown";

/// `url` with `shoal:PASSWORD@` as its user.
fn with_password(url: &str) -> String {
    url.replacen(
        "postgres://shoal@",
        &format!("postgres://shoal:{PASSWORD}@"),
        1,
    )
}

/// A collector started by the test (killed by PID when dropped).
struct Serving {
    child: Child,
    addr: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Serving {
    fn start(mut cmd: Command, log: &Path) -> Serving {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| {
                panic!(
                    "no listening line ({line:?}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .parse()
            .unwrap();
        Serving {
            child,
            addr,
            log: log.to_owned(),
        }
    }

    fn cmdline(&self) -> String {
        String::from_utf8_lossy(
            &std::fs::read(format!("/proc/{}/cmdline", self.child.id())).unwrap(),
        )
        .replace('\0', " ")
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` on `store`, with a collector key (a PostgreSQL store needs `--key-file`; one per test
/// process, made by the binary).
fn serve(store: &[&str]) -> Command {
    static KEY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("shoal-store-url-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let key = dir.join("collector.key");
        make_key(&key);
        key
    });
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(store)
        .arg("--key-file")
        .arg(key);
    cmd.env_remove("SHOAL_STORE")
        .env_remove("CREDENTIALS_DIRECTORY");
    cmd
}

async fn reports_and_hides_the_password(serving: &Serving, device: &str) {
    let enroll = Client::new(serving.addr);
    let mut d = Device::new(device, 31);
    let resp = enroll
        .post_report(d.next(Status::Converged, None), None)
        .await;
    // No enrollment token configured: the store answered (it looked the key up) and refused.
    resp.assert_rejected(403, "unknown_key", "");
    let cmdline = serving.cmdline();
    assert!(
        !cmdline.contains(PASSWORD),
        "in the process list: {cmdline}"
    );
    let log = std::fs::read_to_string(&serving.log).unwrap();
    assert!(
        log.contains("PostgreSQL store postgres://shoal:***@"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "in the log: {log}");
}

#[tokio::test]
async fn the_url_comes_from_a_private_file_or_the_environment_and_never_shows() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = with_password(&cluster.create_database());
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("store-url");
    std::fs::write(&file, format!("{url}\n")).unwrap();

    // Open to the group or to others: refused, naming the file and the cure, before any
    // connection.
    // `credentials`: the CREDENTIALS_DIRECTORY the collector is started with, if any.
    let refused = |file: &Path, mode: u32, credentials: Option<&Path>| {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut cmd = serve(&["--store-file", file.to_str().unwrap()]);
        if let Some(dir) = credentials {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mode:o}: {err}");
        assert!(
            err.contains(&format!(
                "the store URL file {} is open to its group or others (mode {mode:04o})",
                file.display()
            )),
            "{err}"
        );
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains(PASSWORD), "{err}");
    };
    for mode in [0o644, 0o640, 0o604, 0o660] {
        refused(&file, mode, None);
    }

    // In systemd's credentials directory the group bits are an ACL's mask (0440), and the file is
    // the service's alone: accepted there, and nowhere else; others' access is refused there too.
    let credentials = tmp.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let credential = credentials.join("store-url");
    std::fs::write(&credential, format!("{url}\n")).unwrap();
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o440)).unwrap();
    let mut cmd = serve(&["--store-file", credential.to_str().unwrap()]);
    cmd.env("CREDENTIALS_DIRECTORY", &credentials);
    let serving = Serving::start(cmd, &tmp.path().join("credential.log"));
    reports_and_hides_the_password(&serving, "gw-cred").await;
    drop(serving);
    refused(&credential, 0o444, Some(&credentials));
    // Outside the credentials directory, 0440 is refused.
    refused(&file, 0o440, Some(&credentials));

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let serving = Serving::start(
        serve(&["--store-file", file.to_str().unwrap()]),
        &tmp.path().join("file.log"),
    );
    assert!(serving.cmdline().contains("--store-file"));
    reports_and_hides_the_password(&serving, "gw-file").await;
    drop(serving);

    let mut cmd = serve(&[]);
    cmd.env("SHOAL_STORE", &url);
    let serving = Serving::start(cmd, &tmp.path().join("env.log"));
    reports_and_hides_the_password(&serving, "gw-env").await;
    drop(serving);

    // `register` reads the same sources.
    let gw = Device::new("gw-reg", 32);
    let out = Command::new(bin())
        .args([
            "register",
            "--device-id",
            "gw-reg",
            "--key",
            gw.key_id().as_str(),
        ])
        .env("SHOAL_STORE", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An empty file, or more than a URL, is bad usage; so is no store at all.
    std::fs::write(&file, "\n").unwrap();
    let out = serve(&["--store-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    let out = serve(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHOAL_STORE"));
}
