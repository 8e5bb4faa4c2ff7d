//! Offline updates: takes a `git bundle` file (v2 or v3, SHA-1) instead of a server. Reads its
//! header (prerequisites and refs), finds the tracked ref in it, and writes its pack into the
//! mirror exactly as a fetch would: under the same bounds (`max_fetch` for the whole pack,
//! `max_object` per object, followed by the same `PackGauge`), marked unaccepted (`.keep`) until
//! `verify` accepts the tip. Decides nothing about trust and needs no network.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::ObjectId;

use super::bound::{Limits, PackGauge};
use super::Exceeded;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("{} is not a git bundle ({problem}); make one with `git bundle create FILE REF`", path.display())]
    Format { path: PathBuf, problem: String },
    #[error("the bundle {} has no ref {reference}; it holds {}; make it with `git bundle create FILE {reference}`", path.display(), if refs.is_empty() { "none".to_owned() } else { refs.join(", ") })]
    NoRef {
        path: PathBuf,
        reference: String,
        refs: Vec<String>,
    },
    #[error("the bundle {} needs commit {missing}, which this device does not have; make a bundle from the device's applied commit (`git bundle create FILE APPLIED..{reference}`) or a whole one (`git bundle create FILE {reference}`)", path.display())]
    Prerequisite {
        path: PathBuf,
        missing: ObjectId,
        reference: String,
    },
    #[error("{reason} (from the bundle {}); nothing it holds is kept and the device is unchanged; {}", path.display(), reason.advice())]
    Refused { path: PathBuf, reason: Exceeded },
    #[error("cannot write the bundle {}'s objects into the local mirror: {message}", path.display())]
    Write { path: PathBuf, message: String },
}

impl BundleError {
    /// Whether the bundle holds what the agent refuses to take before the signature check.
    pub fn is_refusal(&self) -> bool {
        matches!(self, BundleError::Refused { .. })
    }
}

/// A bundle's header: what its pack needs and which refs it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub prerequisites: Vec<ObjectId>,
    pub refs: Vec<(String, ObjectId)>,
}

/// Reads the header of the bundle at `path` from `reader`, leaving it at the first byte of the
/// pack. v2 (`# v2 git bundle`) and v3 with `@object-format=sha1` only.
pub fn read_header(path: &Path, reader: &mut impl BufRead) -> Result<Header, BundleError> {
    let format = |problem: &str| BundleError::Format {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let mut line = String::new();
    let mut next_line = |line: &mut String| -> Result<bool, BundleError> {
        line.clear();
        // A header line is short; a bundle whose "header" runs on is not one.
        let n = reader
            .by_ref()
            .take(4096)
            .read_line(line)
            .map_err(|e| BundleError::Read {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        if n > 0 && !line.ends_with('\n') {
            return Err(format("a header line is too long or not terminated"));
        }
        Ok(n > 0)
    };
    if !next_line(&mut line)? {
        return Err(format("it is empty"));
    }
    let v3 = match line.trim_end() {
        "# v2 git bundle" => false,
        "# v3 git bundle" => true,
        other => {
            return Err(format(&format!(
                "its first line is {:?}",
                other.chars().take(40).collect::<String>()
            )))
        }
    };
    let mut header = Header {
        prerequisites: Vec::new(),
        refs: Vec::new(),
    };
    loop {
        if !next_line(&mut line)? {
            return Err(format("its header does not end"));
        }
        let text = line.trim_end_matches('\n');
        if text.is_empty() {
            break;
        }
        if let Some(capability) = text.strip_prefix('@') {
            if !v3 {
                return Err(format("a v2 bundle has no capabilities"));
            }
            match capability {
                "object-format=sha1" => continue,
                other => {
                    return Err(format(&format!(
                        "capability {other:?} is not supported (SHA-1 bundles only)"
                    )))
                }
            }
        }
        let (prerequisite, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (hex, name) = rest.split_once(' ').unwrap_or((rest, ""));
        let id = ObjectId::from_hex(hex.as_bytes())
            .map_err(|_| format(&format!("{hex:?} is not an object id")))?;
        if prerequisite {
            header.prerequisites.push(id);
        } else {
            header.refs.push((name.to_owned(), id));
        }
    }
    Ok(header)
}

/// Writes the pack of the bundle at `path` into `repo`'s mirror (`dir`) and returns the tip of
/// `reference` it carries. The pack stays marked unaccepted until `Mirror::accept`.
pub fn import(
    repo: &gix::Repository,
    dir: &Path,
    path: &Path,
    reference: &str,
    limits: Limits,
    interrupt: &AtomicBool,
) -> Result<ObjectId, BundleError> {
    let read_error = |e: std::io::Error| BundleError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > limits.max_fetch.bytes() {
        return Err(BundleError::Refused {
            path: path.to_owned(),
            reason: Exceeded::Fetch {
                limit: limits.max_fetch,
            },
        });
    }
    let mut reader = BufReader::new(file);
    let header = read_header(path, &mut reader)?;
    let tip = header
        .refs
        .iter()
        .find(|(name, _)| name == reference)
        .map(|(_, id)| *id)
        .ok_or_else(|| BundleError::NoRef {
            path: path.to_owned(),
            reference: reference.to_owned(),
            refs: header.refs.iter().map(|(name, _)| name.clone()).collect(),
        })?;
    for &missing in &header.prerequisites {
        if repo.find_header(missing).is_err() {
            return Err(BundleError::Prerequisite {
                path: path.to_owned(),
                missing,
                reference: reference.to_owned(),
            });
        }
    }
    if repo.find_header(tip).is_ok() {
        // Everything is here already (the same bundle again): nothing to write.
        return Ok(tip);
    }
    let mut gauged = BufReader::new(Gauged {
        inner: reader,
        gauge: PackGauge::new(limits, repo.object_hash().len_in_bytes()),
        verdict: None,
    });
    let options = gix::odb::pack::bundle::write::Options {
        // One thread, as for a fetch: memory must not grow with the device's cores.
        thread_limit: Some(1),
        ..Default::default()
    };
    let written = gix::odb::pack::Bundle::write_to_directory(
        &mut gauged,
        Some(&dir.join("objects").join("pack")),
        &mut gix::progress::Discard,
        interrupt,
        Some(&repo.objects),
        repo.object_hash(),
        options,
    );
    if let Some(reason) = gauged.get_mut().verdict.take() {
        super::durable::remove_unaccepted(dir).ok();
        return Err(BundleError::Refused {
            path: path.to_owned(),
            reason,
        });
    }
    written.map_err(|e| BundleError::Write {
        path: path.to_owned(),
        message: crate::errors::error_chain(&e),
    })?;
    Ok(tip)
}

/// A reader that follows the pack through a [`PackGauge`] and fails past the bounds.
struct Gauged<R> {
    inner: R,
    gauge: PackGauge,
    verdict: Option<Exceeded>,
}

impl<R: Read> Read for Gauged<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(verdict) = &self.verdict {
            return Err(std::io::Error::other(verdict.to_string()));
        }
        let n = self.inner.read(buf)?;
        if let Err(verdict) = self.gauge.feed(&buf[..n]) {
            let error = std::io::Error::other(verdict.to_string());
            self.verdict = Some(verdict);
            return Err(error);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_their_refs_and_prerequisites() {
        let a = "0123456789abcdef0123456789abcdef01234567";
        let b = "89abcdef0123456789abcdef0123456789abcdef";
        let text = format!(
            "# v3 git bundle\n@object-format=sha1\n-{a} base\n{b} refs/shoal/releases/production\n\nPACK"
        );
        let mut reader = text.as_bytes();
        let header = read_header(Path::new("b.bundle"), &mut reader).unwrap();
        assert_eq!(
            header.prerequisites,
            [ObjectId::from_hex(a.as_bytes()).unwrap()]
        );
        assert_eq!(
            header.refs,
            [(
                "refs/shoal/releases/production".to_owned(),
                ObjectId::from_hex(b.as_bytes()).unwrap()
            )]
        );
        assert_eq!(reader, b"PACK");

        for (bad, problem) in [
            ("", "it is empty"),
            ("PK\x03\x04zip\n", "its first line is"),
            ("PK\x03\x04zip", "not terminated"),
            (
                "# v2 git bundle\n@object-format=sha1\n\n",
                "a v2 bundle has no capabilities",
            ),
            (
                "# v3 git bundle\n@object-format=sha256\n\n",
                "SHA-1 bundles only",
            ),
            (
                "# v2 git bundle\nnot-hex refs/heads/x\n\n",
                "\"not-hex\" is not an object id",
            ),
            ("# v2 git bundle\n", "its header does not end"),
        ] {
            let err = read_header(Path::new("b.bundle"), &mut bad.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(problem), "{bad:?}: {err}");
        }
    }
}
