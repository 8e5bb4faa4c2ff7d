//! `ConfigRepo`: a config repository built with the real `git`, in scenario-sized steps (write, commit signed, tamper, publish).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::{git_command, output, run, run_bytes};
use crate::signing::SigningKey;

/// A non-bare working repository on branch `main`, isolated from the user's git configuration.
///
/// Every method runs real git commands and panics (naming the command and its stderr) when one fails.
#[derive(Debug)]
pub struct ConfigRepo {
    dir: PathBuf,
}

/// A `shoal.toml` that gives every device one file: `/etc/motd`, from `motd` in the repo.
pub const MOTD_MANIFEST: &str = "version = 1\n[[profile]]\nname = \"base\"\nmatch = \"*\"\n  [[profile.file]]\n  path = \"/etc/motd\"\n  source = \"motd\"\n";

impl ConfigRepo {
    /// Creates `dir` if needed and runs `git init` in it.
    pub fn init(dir: impl AsRef<Path>) -> Self {
        ConfigRepo::init_with(dir, &[])
    }

    /// [`init`](Self::init) with more `git init` options (`--object-format=sha256`).
    pub fn init_with(dir: impl AsRef<Path>, options: &[&str]) -> Self {
        let dir = dir.as_ref().to_path_buf();
        create_dir_all(&dir);
        run(git_command().args(["init", "-q"]).args(options).arg(&dir));
        ConfigRepo { dir }
    }

    /// A repo in `dir` whose first commit, signed by `key` with the message `motd`, declares
    /// [`MOTD_MANIFEST`] with `motd` as the file's content; returns it and the commit id.
    pub fn init_motd(dir: impl AsRef<Path>, key: &SigningKey, motd: &str) -> (Self, String) {
        let repo = ConfigRepo::init(dir);
        repo.write("shoal.toml", MOTD_MANIFEST);
        repo.write("motd", format!("{motd}\n"));
        let id = repo.commit_signed(key, motd);
        (repo, id)
    }

    /// The working tree.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `rel_path` in the working tree, creating parent directories.
    /// The change is staged by the next commit.
    pub fn write(&self, rel_path: impl AsRef<Path>, contents: impl AsRef<[u8]>) {
        let path = self.dir.join(rel_path);
        if let Some(parent) = path.parent() {
            create_dir_all(parent);
        }
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Removes the file or directory `rel_path` from the working tree; staged by the next commit.
    pub fn remove(&self, rel_path: impl AsRef<Path>) {
        let path = self.dir.join(rel_path);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
    }

    /// Commits the whole working tree, signed with `key`; returns the commit id.
    pub fn commit_signed(&self, key: &SigningKey, message: &str) -> String {
        self.commit(Some(key), message, None)
    }

    /// Like [`commit_signed`](Self::commit_signed), with author and committer time `unix_time` (UTC).
    pub fn commit_signed_at(&self, key: &SigningKey, message: &str, unix_time: i64) -> String {
        self.commit(Some(key), message, Some(unix_time))
    }

    /// Commits the whole working tree without a signature; returns the commit id.
    pub fn commit_unsigned(&self, message: &str) -> String {
        self.commit(None, message, None)
    }

    /// Commits signed with `key`, then rewrites the commit so its message no longer matches the
    /// signature (as a man in the middle editing a signed commit would), moves the branch to the
    /// rewritten commit and returns its id. Its tree is the one that was signed.
    pub fn commit_tampered(&self, key: &SigningKey, message: &str) -> String {
        let signed = self.commit_signed(key, message);
        let raw = self.raw_commit(&signed);
        let tampered = tamper_message(&raw);
        let rewritten = run_bytes(
            self.git_cmd()
                .args(["hash-object", "-t", "commit", "-w", "--stdin"]),
            &tampered,
        );
        let rewritten = String::from_utf8_lossy(&rewritten).trim().to_owned();
        self.git(&["update-ref", "HEAD", &rewritten, &signed]);
        rewritten
    }

    /// Writes a commit object on top of HEAD that git's own parser rejects (an author line
    /// with no email or time, as a hostile server could serve), moves the branch to it and
    /// returns its id. `git hash-object --literally` is the only way git writes such a thing.
    pub fn commit_malformed(&self) -> String {
        let head = self.head();
        let tree = self.git(&["rev-parse", "HEAD^{tree}"]);
        let raw = format!(
            "tree {tree}\nparent {head}\nauthor no-email-no-time\ncommitter x\n\nmalformed\n"
        );
        let id = run_bytes(
            self.git_cmd().args([
                "hash-object",
                "--literally",
                "-t",
                "commit",
                "-w",
                "--stdin",
            ]),
            raw.as_bytes(),
        );
        let id = String::from_utf8_lossy(&id).trim().to_owned();
        self.git(&["update-ref", "HEAD", &id, &head]);
        id
    }

    /// `git reset --hard rev`: moves the current branch back (or anywhere), for force-push and rollback scenarios.
    pub fn reset_hard(&self, rev: &str) {
        self.git(&["reset", "-q", "--hard", rev]);
    }

    /// Creates branch `name` at HEAD without switching to it.
    pub fn branch(&self, name: &str) {
        self.git(&["branch", name]);
    }

    /// Switches the working tree to branch (or revision) `name`.
    pub fn checkout(&self, name: &str) {
        self.git(&["checkout", "-q", name]);
    }

    /// Merges `branch` into the current branch as a merge commit (`--no-ff`) signed with `key`;
    /// returns the merge commit id.
    pub fn merge_signed(&self, key: &SigningKey, branch: &str) -> String {
        let message = format!("Merge branch '{branch}'");
        run(self
            .git_cmd()
            .args(key.git_signing_config())
            .args(["merge", "-q", "--no-ff", "-S", "-m", &message, branch]));
        self.head()
    }

    /// The commit id HEAD points at.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// Runs `git args…` in this repository; returns stdout without the final newline.
    pub fn git(&self, args: &[&str]) -> String {
        run(self.git_cmd().args(args))
    }

    /// Runs `git args…` in this repository with `stdin` as its input; returns stdout as it is
    /// (a raw object, a pack).
    pub fn git_bytes(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        run_bytes(self.git_cmd().args(args), stdin)
    }

    /// The raw commit object `rev` (`git cat-file commit`), byte for byte.
    pub fn raw_commit(&self, rev: &str) -> Vec<u8> {
        self.git_bytes(&["cat-file", "commit", rev], &[])
    }

    /// Whether the reference verifier, `git verify-commit` trusting `allowed_signers`, accepts `rev`.
    pub fn git_verifies(&self, allowed_signers: impl AsRef<Path>, rev: &str) -> bool {
        let trust = format!(
            "gpg.ssh.allowedSignersFile={}",
            allowed_signers.as_ref().display()
        );
        output(self.git_cmd().args(["-c", &trust, "verify-commit", rev]))
            .status
            .success()
    }

    /// Whether `git verify-commit` trusting `allowed_signers` and refusing the keys in
    /// `revocation_file` (`gpg.ssh.revocationFile`: a KRL or a list of keys) accepts `rev`.
    pub fn git_verifies_revoking(
        &self,
        allowed_signers: impl AsRef<Path>,
        revocation_file: impl AsRef<Path>,
        rev: &str,
    ) -> bool {
        let trust = format!(
            "gpg.ssh.allowedSignersFile={}",
            allowed_signers.as_ref().display()
        );
        let revoked = format!(
            "gpg.ssh.revocationFile={}",
            revocation_file.as_ref().display()
        );
        output(
            self.git_cmd()
                .args(["-c", &trust, "-c", &revoked, "verify-commit", rev]),
        )
        .status
        .success()
    }

    /// Makes the annotated tag `name` on `target` with `message`, signed with `key` as stock git
    /// does (`git tag -s`, `gpg.format=ssh`), tagged at `unix_time` (UTC) if given; replaces a tag
    /// of that name. Returns the tag object's id.
    pub fn tag_signed(
        &self,
        key: &SigningKey,
        name: &str,
        target: &str,
        message: &str,
        unix_time: Option<i64>,
    ) -> String {
        let mut cmd = self.git_cmd();
        cmd.args(key.git_signing_config());
        cmd.args(["tag", "-f", "-s", "-m", message, name, target]);
        if let Some(time) = unix_time {
            cmd.env("GIT_COMMITTER_DATE", format!("@{time} +0000"));
        }
        run(&mut cmd);
        self.git(&["rev-parse", &format!("refs/tags/{name}")])
    }

    /// An annotated tag without a signature (`git tag -a`); returns the tag object's id.
    pub fn tag_unsigned(&self, name: &str, target: &str, message: &str) -> String {
        self.git(&["tag", "-f", "-a", "--no-sign", "-m", message, name, target]);
        self.git(&["rev-parse", &format!("refs/tags/{name}")])
    }

    /// A lightweight tag (a ref straight to `target`, no tag object); returns `target`'s id.
    pub fn tag_lightweight(&self, name: &str, target: &str) -> String {
        self.git(&["tag", "-f", name, target]);
        self.git(&["rev-parse", &format!("refs/tags/{name}")])
    }

    /// Signs the tag `name` like [`tag_signed`](Self::tag_signed), then rewrites the tag object
    /// with `edit` applied to its bytes (the signature left as it was), moves `refs/tags/name`
    /// to the rewritten object and returns its id: a tag changed after it was signed.
    pub fn tag_edited(
        &self,
        key: &SigningKey,
        name: &str,
        target: &str,
        message: &str,
        edit: impl FnOnce(Vec<u8>) -> Vec<u8>,
    ) -> String {
        let signed = self.tag_signed(key, name, target, message, None);
        let edited = edit(self.raw_tag(&signed));
        let id = run_bytes(
            self.git_cmd()
                .args(["hash-object", "-t", "tag", "-w", "--stdin"]),
            &edited,
        );
        let id = String::from_utf8_lossy(&id).trim().to_owned();
        self.git(&["update-ref", &format!("refs/tags/{name}"), &id, &signed]);
        id
    }

    /// The raw tag object `rev` (`git cat-file tag`), byte for byte.
    pub fn raw_tag(&self, rev: &str) -> Vec<u8> {
        self.git_bytes(&["cat-file", "tag", rev], &[])
    }

    /// Whether the reference verifier, `git verify-tag` trusting `allowed_signers`, accepts `rev`.
    pub fn git_verifies_tag(&self, allowed_signers: impl AsRef<Path>, rev: &str) -> bool {
        let trust = format!(
            "gpg.ssh.allowedSignersFile={}",
            allowed_signers.as_ref().display()
        );
        output(self.git_cmd().args(["-c", &trust, "verify-tag", rev]))
            .status
            .success()
    }

    /// Force-pushes `source` (a ref or object id here) to the ref `destination` of the bare
    /// repository `bare_dir`, as an operator publishes a release
    /// (`+refs/tags/production/42:refs/shoal/releases/production`).
    pub fn publish_ref(&self, bare_dir: impl AsRef<Path>, source: &str, destination: &str) {
        let bare_dir = bare_dir.as_ref();
        if !bare_dir.join("HEAD").exists() {
            run(git_command().args(["init", "-q", "--bare"]).arg(bare_dir));
        }
        run(self
            .git_cmd()
            .args(["push", "-q", "--force"])
            .arg(bare_dir)
            .arg(format!("+{source}:{destination}")));
    }

    /// Force-pushes every branch and tag to the bare repository `bare_dir` (made if missing) and
    /// deletes there the branches deleted here, so servers exporting it show exactly this repo.
    pub fn publish_to(&self, bare_dir: impl AsRef<Path>) {
        let bare_dir = bare_dir.as_ref();
        if !bare_dir.join("HEAD").exists() {
            run(git_command().args(["init", "-q", "--bare"]).arg(bare_dir));
        }
        run(self
            .git_cmd()
            .args(["push", "-q", "--force", "--prune"])
            .arg(bare_dir)
            .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]));
    }

    fn commit(&self, key: Option<&SigningKey>, message: &str, unix_time: Option<i64>) -> String {
        self.git(&["add", "-A"]);
        let mut cmd = self.git_cmd();
        if let Some(key) = key {
            cmd.args(key.git_signing_config());
        }
        // --allow-empty: a scenario may re-sign an unchanged tree (a new generation with the same files).
        cmd.args(["commit", "-q", "--allow-empty", "-m", message]);
        cmd.arg(if key.is_some() { "-S" } else { "--no-gpg-sign" });
        if let Some(time) = unix_time {
            let date = format!("@{time} +0000");
            cmd.env("GIT_AUTHOR_DATE", &date)
                .env("GIT_COMMITTER_DATE", &date);
        }
        run(&mut cmd);
        self.head()
    }

    fn git_cmd(&self) -> Command {
        let mut cmd = git_command();
        cmd.arg("-C").arg(&self.dir);
        cmd
    }
}

/// Prefixes the message of raw commit object `raw` with "tampered: ", leaving headers (and the
/// signature among them) as they were.
fn tamper_message(raw: &[u8]) -> Vec<u8> {
    // Headers end at the first empty line; signature continuation lines start with a space, so a
    // signature never contains "\n\n".
    let message_start = raw
        .windows(2)
        .position(|pair| pair == b"\n\n")
        .map(|at| at + 2)
        .unwrap_or_else(|| {
            panic!(
                "commit object has no message:\n{}",
                String::from_utf8_lossy(raw)
            )
        });
    assert!(
        raw[..message_start].windows(7).any(|w| w == b"\ngpgsig"),
        "commit to tamper with is not signed:\n{}",
        String::from_utf8_lossy(raw)
    );
    let mut tampered = raw[..message_start].to_vec();
    tampered.extend_from_slice(b"tampered: ");
    tampered.extend_from_slice(&raw[message_start..]);
    tampered
}

fn create_dir_all(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
}

/// Copies the directory tree `from` to `to` (files and directories only), e.g. a published bare
/// repository into a guest's root, where git itself cannot run.
pub fn copy_tree(from: &Path, to: &Path) {
    create_dir_all(to);
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        }
    }
}
