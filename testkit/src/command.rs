//! Runs external programs for the tests (and `git` isolated from the host's configuration): every failure panics naming the command, its exit status and its output.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The identity every commit made by the harness carries, so ids depend only on content and time.
pub const GIT_USER_NAME: &str = "Shoal Test";
pub const GIT_USER_EMAIL: &str = "test@shoal.invalid";

/// A `git` command that ignores the user's and the system's configuration and any repository the
/// test process happens to run inside, and commits as [`GIT_USER_NAME`] on branch `main` by default.
pub fn git_command() -> Command {
    let mut cmd = Command::new("git");
    isolate_git(&mut cmd);
    cmd
}

/// Applies the isolation of [`git_command`] to any command that runs git (or a git library) inside.
pub fn isolate_git(cmd: &mut Command) -> &mut Command {
    // Variables an outer git (a hook, `git rebase -x`) may have set would redirect every command.
    for leaked in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG",
    ] {
        cmd.env_remove(leaked);
    }
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", GIT_USER_NAME)
        .env("GIT_AUTHOR_EMAIL", GIT_USER_EMAIL)
        .env("GIT_COMMITTER_NAME", GIT_USER_NAME)
        .env("GIT_COMMITTER_EMAIL", GIT_USER_EMAIL)
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "init.defaultBranch")
        .env("GIT_CONFIG_VALUE_0", "main")
        // git hands ssh-keygen the committer time in local time, and allowed_signers validity
        // windows are UTC: a host time zone would shift every verdict near a window's edge.
        .env("TZ", "UTC")
}

/// Where git keeps its helper programs (`git-http-backend`, `git-daemon`). Servers run these
/// directly so the process the harness holds is the server itself, not a `git` wrapper around it.
pub fn git_exec_path() -> &'static PathBuf {
    static EXEC_PATH: OnceLock<PathBuf> = OnceLock::new();
    EXEC_PATH.get_or_init(|| PathBuf::from(run(git_command().arg("--exec-path"))))
}

/// Runs `cmd` with no input and returns its stdout without the final newline; panics unless it succeeds.
pub fn run(cmd: &mut Command) -> String {
    let stdout = run_bytes(cmd, &[]);
    let text = String::from_utf8_lossy(&stdout);
    text.strip_suffix('\n').unwrap_or(&text).to_owned()
}

/// Runs `cmd` with `stdin` as its input and returns its raw stdout; panics unless it succeeds.
pub fn run_bytes(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let output = output_with_stdin(cmd, stdin);
    if !output.status.success() {
        panic!("{}", failure_report(cmd, &output));
    }
    output.stdout
}

/// Runs `cmd` with no input, whatever its exit status; panics only if it cannot be started.
pub fn output(cmd: &mut Command) -> Output {
    output_with_stdin(cmd, &[])
}

/// Runs `cmd` with `stdin` as its input, whatever its exit status; panics only if it cannot be started.
pub fn output_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(cmd)));
    let mut input = child.stdin.take().expect("stdin was configured as piped");
    let stdin = stdin.to_vec();
    // A separate writer keeps a child that answers before reading all its input from deadlocking us.
    let writer = std::thread::spawn(move || {
        // A child that exits without reading its input is not our failure to report; its status is.
        let _ = input.write_all(&stdin);
    });
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for `{}`: {e}", describe(cmd)));
    writer.join().expect("stdin writer thread panicked");
    output
}

/// The message a failed command panics with: what ran, where, how it ended and what it said.
pub fn failure_report(cmd: &Command, output: &Output) -> String {
    format!(
        "command failed: `{}`\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        describe(cmd),
        output.status,
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end(),
    )
}

/// `program arg…` as a person would type it, plus the working directory when one was set.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            text.push_str(&format!(" '{}'", arg.replace('\'', r"'\''")));
        } else {
            text.push(' ');
            text.push_str(&arg);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        text.push_str(&format!(" (in {})", dir.display()));
    }
    text
}

/// Makes the child get SIGKILL when the thread that spawns it ends (a panic=abort, a timeout
/// kill of the test): the test's namespaces and guests never outlive it.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}
