//! Real ed25519 SSH signing keys made by `ssh-keygen`, and the allowed_signers files that trust them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::{run, run_bytes};

/// An ed25519 key pair on disk, as a release engineer's `ssh-keygen` would make it.
#[derive(Debug, Clone)]
pub struct SigningKey {
    private_path: PathBuf,
    public_path: PathBuf,
    public_line: String,
}

impl SigningKey {
    /// Makes `dir/name` (private, no passphrase) and `dir/name.pub`, with `name` as the key comment;
    /// creates `dir` if needed.
    pub fn generate(dir: impl AsRef<Path>, name: &str) -> Self {
        SigningKey::generate_typed(dir, name, "ed25519")
    }

    /// Like [`generate`](Self::generate), a key of `ssh-keygen -t key_type` (`rsa`, `ecdsa`…),
    /// for the cases where a key that is not ed25519 must be refused.
    pub fn generate_typed(dir: impl AsRef<Path>, name: &str, key_type: &str) -> Self {
        std::fs::create_dir_all(dir.as_ref())
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.as_ref().display()));
        let private_path = dir.as_ref().join(name);
        run(Command::new("ssh-keygen")
            .args(["-t", key_type, "-N", "", "-q", "-C", name, "-f"])
            .arg(&private_path));
        let public_path = dir.as_ref().join(format!("{name}.pub"));
        let public_line = std::fs::read_to_string(&public_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", public_path.display()))
            .trim_end()
            .to_owned();
        SigningKey {
            private_path,
            public_path,
            public_line,
        }
    }

    pub fn private_path(&self) -> &Path {
        &self.private_path
    }

    pub fn public_path(&self) -> &Path {
        &self.public_path
    }

    /// The `.pub` file's text: `ssh-ed25519 AAAA… comment`.
    pub fn public_line(&self) -> &str {
        &self.public_line
    }

    /// `principal namespaces="git" ssh-ed25519 AAAA…`: trusts this key to sign git objects as `principal`.
    pub fn allowed_signers_line(&self, principal: &str) -> String {
        let mut fields = self.public_line.split_whitespace();
        let (key_type, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        format!("{principal} namespaces=\"git\" {key_type} {key}")
    }

    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        let listing = run(Command::new("ssh-keygen").arg("-lf").arg(&self.public_path));
        listing
            .split(' ')
            .nth(1)
            .unwrap_or_else(|| panic!("no fingerprint in {listing:?}"))
            .to_owned()
    }

    /// `ssh-keygen -Y sign -n namespace [options…]` over `data`: the armored SSHSIG signature.
    pub fn sign(&self, namespace: &str, options: &[&str], data: &[u8]) -> String {
        let signature = run_bytes(
            Command::new("ssh-keygen")
                .args(["-Y", "sign", "-n", namespace, "-f"])
                .arg(&self.private_path)
                .args(options),
            data,
        );
        String::from_utf8(signature).expect("an armored signature is ASCII")
    }

    /// The `-c` options that make `git commit -S` / `git merge -S` sign with this key.
    pub fn git_signing_config(&self) -> [String; 4] {
        [
            "-c".into(),
            "gpg.format=ssh".into(),
            "-c".into(),
            format!("user.signingkey={}", self.private_path.display()),
        ]
    }
}

/// Writes an allowed_signers file trusting each `(principal, key)` pair, one line each.
pub fn write_allowed_signers(path: impl AsRef<Path>, signers: &[(&str, &SigningKey)]) {
    let mut text = String::new();
    for (principal, key) in signers {
        writeln!(text, "{}", key.allowed_signers_line(principal)).expect("writing to a String");
    }
    let path = path.as_ref();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
