//! The collector's own ed25519 key, which signs the halt list in every report's answer (devices
//! pin its public half in `[collector] key`). Kept in a file of 32 raw bytes (the seed, like the
//! agent's `identity.key`), mode 0600: a key file its group or others may read is refused. The
//! embedded store keeps it as `DATA/collector.key`, made on first start; PostgreSQL replicas
//! share one file given by `--key-file`, made once by `shoal-collector key --generate`.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use shoal_proto::KeyId;

/// The key file's name inside the embedded store's directory.
pub const KEY_FILE: &str = "collector.key";

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("the collector key file {path} is readable by its group or others (mode {mode:04o}); anyone who reads it can sign halt lists: chmod 600 {path}")]
    OpenToOthers { path: PathBuf, mode: u32 },
    #[error("the collector key file {path} holds {len} bytes, not a 32-byte ed25519 seed; restore it from a backup, or move it aside and make a new key (then re-pin it in every agent's [collector] key)")]
    BadLength { path: PathBuf, len: usize },
    #[error("the collector key file {path} does not exist; make it once with `shoal-collector key --key-file {path} --generate` and give every replica the same file")]
    Missing { path: PathBuf },
    #[error("the collector key file {path} exists already; `--generate` never replaces a key (devices pin it): remove it first if you mean to")]
    Exists { path: PathBuf },
    #[error("{doing} the collector key file {path}: {source}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> KeyFileError + 'a {
    move |source| KeyFileError::Io {
        doing,
        path: path.to_owned(),
        source,
    }
}

/// The collector's key: the signing half, and where it came from.
#[derive(Clone)]
pub struct CollectorKey {
    pub signing: SigningKey,
    pub path: PathBuf,
    /// True when this start made the key.
    pub created: bool,
}

impl std::fmt::Debug for CollectorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: only the public key and the file.
        f.debug_struct("CollectorKey")
            .field("key_id", &self.key_id().as_str())
            .field("path", &self.path)
            .finish()
    }
}

impl CollectorKey {
    /// `ed25519:BASE64` of the public key: what operators put in `[collector] key`.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.signing.verifying_key())
    }

    /// Loads the key in `path`; refuses a missing file (`Missing`), one open to group or others
    /// and one that is not 32 bytes.
    pub fn load(path: &Path) -> Result<CollectorKey, KeyFileError> {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyFileError::Missing {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(io("opening", path)(e)),
        };
        let mode = file
            .metadata()
            .map_err(io("reading", path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::OpenToOthers {
                path: path.to_owned(),
                mode,
            });
        }
        let mut bytes = Vec::with_capacity(32);
        std::io::Read::by_ref(&mut file)
            .take(1024)
            .read_to_end(&mut bytes)
            .map_err(io("reading", path))?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyFileError::BadLength {
                path: path.to_owned(),
                len: bytes.len(),
            })?;
        Ok(CollectorKey {
            signing: SigningKey::from_bytes(&seed),
            path: path.to_owned(),
            created: false,
        })
    }

    /// Makes a new key in `path` (0600 from the start, fsynced with its directory); refuses to
    /// replace an existing file.
    pub fn generate(path: &Path) -> Result<CollectorKey, KeyFileError> {
        let mut seed = [0u8; 32];
        let urandom = Path::new("/dev/urandom");
        std::fs::File::open(urandom)
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(|source| KeyFileError::Io {
                doing: "reading /dev/urandom for",
                path: path.to_owned(),
                source,
            })?;
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(KeyFileError::Exists {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(io("creating", path)(e)),
        };
        // A crash before the fsync may leave a short file: `load` then refuses it by length
        // rather than signing with part of a key.
        file.write_all(&seed).map_err(io("writing", path))?;
        file.sync_all().map_err(io("writing", path))?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing the directory of", path))?;
        }
        Ok(CollectorKey {
            signing: SigningKey::from_bytes(&seed),
            path: path.to_owned(),
            created: true,
        })
    }

    /// Loads the key in `path`, making it first when there is none (the embedded store).
    pub fn load_or_generate(path: &Path) -> Result<CollectorKey, KeyFileError> {
        match CollectorKey::load(path) {
            Err(KeyFileError::Missing { .. }) => match CollectorKey::generate(path) {
                // Another process made it meanwhile: take that one.
                Err(KeyFileError::Exists { .. }) => CollectorKey::load(path),
                other => other,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_and_loaded_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let made = CollectorKey::load_or_generate(&path).unwrap();
        assert!(made.created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = CollectorKey::load_or_generate(&path).unwrap();
        assert!(!again.created);
        assert_eq!(again.key_id(), made.key_id());
        let err = CollectorKey::generate(&path).unwrap_err();
        assert!(err.to_string().contains("never replaces a key"), "{err}");
        assert!(!format!("{made:?}").contains(&format!("{:?}", made.signing.to_bytes())));
    }

    #[test]
    fn bad_key_files_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let err = CollectorKey::load(&path).unwrap_err();
        assert!(err.to_string().contains("--generate"), "{err}");
        std::fs::write(&path, [7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = CollectorKey::load(&path).unwrap_err();
        assert!(err.to_string().contains("(mode 0640)"), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        CollectorKey::load(&path).unwrap();
        std::fs::write(&path, [7u8; 31]).unwrap();
        let err = CollectorKey::load(&path).unwrap_err();
        assert!(err.to_string().contains("holds 31 bytes"), "{err}");
    }
}
