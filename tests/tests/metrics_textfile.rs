//! `[metrics] textfile`: the real agent rewrites a node_exporter textfile after each sync and
//! rollback (atomically, mode 0644), its text passes Prometheus's own checker (`promtool check
//! metrics`, Debian's `prometheus` package), and a failed sync moves the status gauge; a textfile
//! the collector would never read (not `*.prom`) is refused at load, and one that cannot be
//! written leaves the sync itself unharmed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use shoal_e2e::{gateway_config, require_tools, Sandbox};

/// Adds `[metrics] textfile = PATH` to the device's config.
fn export_to(f: &Sandbox, textfile: &Path) {
    let config = std::fs::read_to_string(f.device.config_path()).expect("read agent.toml");
    let config = format!(
        "{config}\n[metrics]\ntextfile = \"{}\"\n",
        textfile.display()
    );
    std::fs::write(f.device.config_path(), config).expect("write agent.toml");
}

/// The textfile's text after `promtool check metrics` accepted it (parse errors and lint).
fn checked(textfile: &Path) -> String {
    let text = std::fs::read_to_string(textfile).expect("read the textfile");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refused the textfile:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The value of the sample `series` (name and labels exactly as written), if present.
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.to_owned())
        })
}

fn status_of(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("shoal_agent_last_sync_status{status=\"")?;
            let (status, value) = rest.split_once("\"} ")?;
            (value == "1").then(|| status.to_owned())
        })
        .collect()
}

fn textfile_dir(f: &Sandbox) -> PathBuf {
    let dir = f.dir.path().join("node-exporter");
    std::fs::create_dir_all(&dir).expect("mkdir the textfile directory");
    dir
}

#[test]
fn each_sync_and_rollback_rewrites_the_textfile_and_a_failed_sync_moves_the_status() {
    let Some(f) = Sandbox::new() else { return };
    if !require_tools(&["promtool"]) {
        return;
    }
    let dir = textfile_dir(&f);
    let textfile = dir.join("shoal.prom");
    export_to(&f, &textfile);

    let first = f.push(&gateway_config("hello\n"), "first");
    f.device.sync().expect(0, "applied generation 1");
    let text = checked(&textfile);
    assert_eq!(status_of(&text), ["converged"], "{text}");
    assert_eq!(
        sample(&text, "shoal_agent_generation").as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            &format!("shoal_agent_applied_info{{commit=\"{first}\",generation=\"1\"}}")
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(sample(&text, "shoal_agent_held").as_deref(), Some("0"));
    let synced_at: u64 = sample(&text, "shoal_agent_last_sync_timestamp_seconds")
        .expect("timestamp")
        .parse()
        .expect("a number");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        synced_at <= now && now - synced_at < 300,
        "{synced_at} vs {now}"
    );
    let duration: f64 = sample(&text, "shoal_agent_last_sync_duration_seconds")
        .expect("duration")
        .parse()
        .expect("a number");
    assert!(duration > 0.0 && duration < 300.0, "{duration}");
    let mode = std::fs::metadata(&textfile)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "node_exporter runs as its own user");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert_eq!(names, ["shoal.prom"], "no temp file is left beside it");

    // A refused commit: the status gauge moves, the generation and commit stay.
    f.repo.write("files/motd", "unsigned change\n");
    f.repo.commit_unsigned("unsigned");
    f.publish();
    f.device.sync().expect(1, "is not signed");
    let text = checked(&textfile);
    assert_eq!(status_of(&text), ["refused"], "{text}");
    assert_eq!(
        sample(&text, "shoal_agent_generation").as_deref(),
        Some("1")
    );
    assert!(text.contains(&format!("commit=\"{first}\"")), "{text}");

    // The operator goes back to a signed tip; then rolls back to it: held, generation 1.
    f.repo.reset_hard(&first);
    let second = f.push(&gateway_config("second\n"), "second");
    f.device.sync().expect(0, "applied generation 2");
    let text = checked(&textfile);
    assert_eq!(status_of(&text), ["converged"], "{text}");
    assert!(
        text.contains(&format!("commit=\"{second}\",generation=\"2\"")),
        "{text}"
    );
    f.device
        .agent(&["rollback"])
        .expect(0, "rolled back from generation 2 to 1");
    let text = checked(&textfile);
    assert_eq!(status_of(&text), ["held"], "{text}");
    assert_eq!(sample(&text, "shoal_agent_held").as_deref(), Some("1"));
    assert!(
        text.contains(&format!("commit=\"{first}\",generation=\"1\"")),
        "{text}"
    );
}

#[test]
fn a_textfile_node_exporter_would_not_read_is_refused_at_load_and_nothing_changes() {
    let Some(f) = Sandbox::new() else { return };
    f.push(&gateway_config("hello\n"), "first");
    export_to(&f, &textfile_dir(&f).join("shoal.txt"));
    let run = f.device.sync();
    run.expect(2, "`metrics.textfile` = ");
    run.expect(
        2,
        "does not end in .prom, and node_exporter's textfile collector reads only *.prom files",
    );
    assert!(
        !f.device.state_dir().exists(),
        "a refused config touches no state"
    );
    assert!(!f.root("/etc/motd").exists());
}

#[test]
fn a_textfile_that_cannot_be_written_is_a_warning_and_the_sync_still_converges() {
    let Some(f) = Sandbox::new() else { return };
    // Its directory does not exist.
    let textfile = f.dir.path().join("no-such-dir/shoal.prom");
    export_to(&f, &textfile);
    f.push(&gateway_config("hello\n"), "first");
    let run = f.device.sync();
    run.expect(0, "applied generation 1");
    run.expect(0, "metrics textfile not written");
    run.expect(0, "no-such-dir");
    assert_eq!(f.read("/etc/motd"), "hello\n");
    assert!(!textfile.exists());
}

/// A textfile directory another user can write (here: mode 0777, as a careless
/// `/var/lib/node_exporter` or `/tmp` would be) is refused: the agent runs as root, and whoever
/// writes that directory could swap the agent's temp file or the directory for a link between
/// its steps. The sync converges, the refusal is a warning naming the directory, and nothing is
/// written there.
#[test]
fn a_textfile_directory_others_can_write_is_refused_and_nothing_is_written() {
    use std::os::unix::fs::PermissionsExt;
    let Some(f) = Sandbox::new() else { return };
    let dir = textfile_dir(&f);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let textfile = dir.join("shoal.prom");
    export_to(&f, &textfile);
    f.push(&gateway_config("hello\n"), "first");
    let run = f.device.sync();
    run.expect(0, "applied generation 1");
    run.expect(0, "refusing to write the metrics textfile into");
    run.expect(0, "group or others may write it (mode 777)");
    assert_eq!(f.read("/etc/motd"), "hello\n");
    assert_eq!(
        std::fs::read_dir(&dir).expect("ls").count(),
        0,
        "nothing was written into the directory"
    );
}
