//! The policy chain (`.shoal/policy.toml`, range mode): walks the commits between the applied one
//! and the tip parents first, and for each commit and each parent decides whether the commit's
//! signer, with the approvals tagged on it (`refs/tags/shoal-approve/<commit>/<name>`), may change
//! the paths it changes, under the policy in force at that parent. Before any policy, the
//! device's `allowed_signers` is the root (`[trust] root_threshold`), and may change anything but
//! the policy with one signature. Reads the mirror's objects; writes nothing. The rules are
//! `shoal_core::policy`'s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;

use gix::ObjectId;
use shoal_core::policy::{Decision, Policy, Requirement, Role, POLICY_PATH};
use shoal_core::signature::sshsig::{self, SignatureError, Signer};
use shoal_core::signature::AllowedSigners;

use crate::errors::error_chain;

/// The prefix of approval tags: `refs/tags/shoal-approve/<commit>/<name>`.
pub const APPROVAL_PREFIX: &str = "refs/tags/shoal-approve/";

/// The trusted policy a device keeps with its watermark: the commit that brought it and the
/// blob of `.shoal/policy.toml` there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyRecord {
    pub commit: ObjectId,
    pub blob: ObjectId,
}

/// An approval tag as the server advertised it: its ref name and the tag object's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub reference: String,
    pub tag: ObjectId,
}

/// The policy in force after a commit: none yet (the device's allowed_signers rule), or a policy
/// with the commit that brought it.
#[derive(Clone)]
pub(crate) enum InForce {
    Bootstrap,
    Policy {
        record: PolicyRecord,
        policy: Rc<Policy>,
        signers: Rc<AllowedSigners>,
    },
}

impl InForce {
    pub(crate) fn record(&self) -> Option<PolicyRecord> {
        match self {
            InForce::Bootstrap => None,
            InForce::Policy { record, .. } => Some(*record),
        }
    }

    pub(crate) fn policy(&self) -> Option<&Policy> {
        match self {
            InForce::Bootstrap => None,
            InForce::Policy { policy, .. } => Some(policy),
        }
    }

    fn blob(&self) -> Option<ObjectId> {
        self.record().map(|r| r.blob)
    }
}

/// Why a commit is refused under the policy chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("commit {commit}: {source}")]
    Signature {
        commit: ObjectId,
        #[source]
        source: Box<SignatureError>,
    },
    #[error(transparent)]
    NotAllowed(Box<NotAllowed>),
    #[error("{0}")]
    Policy(Box<shoal_core::policy::PolicyError>),
    #[error("commit {commit} removes {POLICY_PATH}; a policy is replaced, never removed (removing it would fall back to the devices' allowed_signers); commit a new policy signed by the root instead")]
    Removed { commit: ObjectId },
    #[error("cannot read {what} from the repository: {message}")]
    Object { what: String, message: String },
}

/// A path change the policy in force at the parent does not allow to the commit's signers.
#[derive(Debug, thiserror::Error)]
#[error("commit {commit} signed by {signer} changes `{path}` (against parent {parent}), which {decision}; under {policy}; {advice}")]
pub struct NotAllowed {
    pub commit: ObjectId,
    pub parent: String,
    pub signer: String,
    pub path: String,
    pub decision: Decision,
    pub policy: String,
    pub advice: String,
}

/// What the walk knows besides the repository: the device's trust root and the approvals.
pub(crate) struct Chain<'a> {
    pub repo: &'a gix::Repository,
    /// The device's allowed_signers (with its revoked keys).
    pub bootstrap: &'a AllowedSigners,
    /// `[trust] root_threshold`: how many allowed_signers principals must sign the first policy.
    pub root_threshold: usize,
    /// Approval tags by the commit they name.
    pub approvals: BTreeMap<ObjectId, Vec<&'a Approval>>,
    /// Policies already parsed, by blob id.
    pub parsed: HashMap<ObjectId, InForce>,
}

/// One commit's verdict, for `verify --policy`: per parent, which rule allowed each path.
#[derive(Debug, Clone)]
pub struct CommitReport {
    pub commit: ObjectId,
    pub signer: Signer,
    pub approvers: Vec<String>,
    pub ignored_approvals: Vec<String>,
    pub paths: Vec<PathReport>,
}

#[derive(Debug, Clone)]
pub struct PathReport {
    pub path: String,
    pub parent: Option<ObjectId>,
    pub decision: Decision,
}

impl fmt::Display for PathReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.decision.allowed() {
            "allowed"
        } else {
            "REFUSED"
        };
        write!(f, "{verdict} {}: {}", self.path, self.decision)
    }
}

pub(crate) fn object_error(
    what: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> ChainError {
    ChainError::Object {
        what: what.into(),
        message: error_chain(&e),
    }
}

impl<'a> Chain<'a> {
    pub(crate) fn new(
        repo: &'a gix::Repository,
        bootstrap: &'a AllowedSigners,
        root_threshold: usize,
        approvals: &'a [Approval],
    ) -> Self {
        let mut by_commit: BTreeMap<ObjectId, Vec<&Approval>> = BTreeMap::new();
        for approval in approvals {
            let Some(rest) = approval.reference.strip_prefix(APPROVAL_PREFIX) else {
                continue;
            };
            let Some((commit, _name)) = rest.split_once('/') else {
                continue;
            };
            if let Ok(commit) = ObjectId::from_hex(commit.as_bytes()) {
                by_commit.entry(commit).or_default().push(approval);
            }
        }
        Chain {
            repo,
            bootstrap,
            root_threshold,
            approvals: by_commit,
            parsed: HashMap::new(),
        }
    }

    /// The policy in the tree of `commit`, if any: (blob id, its text).
    pub(crate) fn policy_blob(
        &self,
        commit: ObjectId,
    ) -> Result<Option<(ObjectId, Vec<u8>)>, ChainError> {
        let what = || format!("the tree of commit {commit}");
        let tree = self
            .repo
            .find_commit(commit)
            .map_err(|e| object_error(what(), e))?
            .tree()
            .map_err(|e| object_error(what(), e))?;
        let Some(entry) = tree
            .lookup_entry_by_path(POLICY_PATH)
            .map_err(|e| object_error(what(), e))?
        else {
            return Ok(None);
        };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        let blob = self
            .repo
            .find_blob(entry.object_id())
            .map_err(|e| object_error(format!("{POLICY_PATH} at commit {commit}"), e))?;
        Ok(Some((entry.object_id(), blob.data.clone())))
    }

    /// The policy in force after `commit`, read from its tree (`brought_by`: the commit named
    /// in the record and in messages when the blob is new).
    pub(crate) fn in_force_at(
        &mut self,
        commit: ObjectId,
        brought_by: ObjectId,
        inherited: &InForce,
    ) -> Result<InForce, ChainError> {
        let Some((blob, bytes)) = self.policy_blob(commit)? else {
            return Ok(InForce::Bootstrap);
        };
        if inherited.blob() == Some(blob) {
            return Ok(inherited.clone());
        }
        if let Some(known) = self.parsed.get(&blob) {
            return Ok(known.clone());
        }
        // Named by the commit that brought it: the one the device records and the errors cite.
        let origin = format!("{POLICY_PATH} at commit {brought_by}");
        let text = String::from_utf8_lossy(&bytes);
        let policy = Policy::parse(&text, &origin).map_err(|e| ChainError::Policy(Box::new(e)))?;
        let signers = AllowedSigners::parse(
            &policy.allowed_signers_text(),
            std::path::Path::new(&origin),
        )
        .map_err(|e| ChainError::Object {
            what: origin.clone(),
            message: e.to_string(),
        })?;
        let signers = match self.bootstrap.revoked() {
            Some(revoked) => signers.with_revoked(revoked.clone()),
            None => signers,
        };
        let in_force = InForce::Policy {
            record: PolicyRecord {
                commit: brought_by,
                blob,
            },
            policy: Rc::new(policy),
            signers: Rc::new(signers),
        };
        self.parsed.insert(blob, in_force.clone());
        Ok(in_force)
    }

    /// The keys signatures are checked against under `in_force`.
    fn signers<'s>(&'s self, in_force: &'s InForce) -> &'s AllowedSigners {
        match in_force {
            InForce::Bootstrap => self.bootstrap,
            InForce::Policy { signers, .. } => signers,
        }
    }

    /// The bootstrap root: every principal of allowed_signers, `root_threshold` of them.
    fn bootstrap_root(&self) -> Role {
        Role {
            principals: self
                .bootstrap
                .entries()
                .iter()
                .map(|e| e.principal().to_owned())
                .collect(),
            threshold: self.root_threshold,
        }
    }

    /// The commit's signer under the keys of `in_force` (the applied commit, already accepted).
    pub(crate) fn check_signature(
        &self,
        commit: ObjectId,
        in_force: &InForce,
    ) -> Result<Signer, ChainError> {
        let object = self
            .repo
            .find_object(commit)
            .map_err(|e| object_error(format!("commit {commit}"), e))?;
        sshsig::check_commit(self.signers(in_force), &object.data).map_err(|source| {
            ChainError::Signature {
                commit,
                source: Box::new(source),
            }
        })
    }

    /// Checks `commit` against each of its parents (`None`: a root commit, against the empty
    /// tree and the bootstrap root), each parent's policy given by `in_force_of`.
    pub(crate) fn check_commit(
        &self,
        commit: ObjectId,
        parents: &[(Option<ObjectId>, InForce)],
        explain: bool,
    ) -> Result<CommitReport, ChainError> {
        let object = self
            .repo
            .find_object(commit)
            .map_err(|e| object_error(format!("commit {commit}"), e))?;
        let raw = object.data.clone();
        let tree = self
            .repo
            .find_commit(commit)
            .map_err(|e| object_error(format!("commit {commit}"), e))?
            .tree_id()
            .map_err(|e| object_error(format!("commit {commit}"), e))?
            .detach();
        let mut report = CommitReport {
            commit,
            signer: Signer {
                principal: String::new(),
                fingerprint: String::new(),
            },
            approvers: Vec::new(),
            ignored_approvals: Vec::new(),
            paths: Vec::new(),
        };
        for (parent, in_force) in parents {
            let signers = self.signers(in_force);
            let signer =
                sshsig::check_commit(signers, &raw).map_err(|source| ChainError::Signature {
                    commit,
                    source: Box::new(source),
                })?;
            let mut principals = BTreeSet::from([signer.principal.clone()]);
            report.signer = signer.clone();
            let (approvers, ignored) = self.approvers(commit, signers);
            principals.extend(approvers.iter().cloned());
            report.approvers = approvers.into_iter().collect();
            report.ignored_approvals = ignored;

            // Before any policy, only the policy itself needs more than one signature: skip
            // the diff unless the policy file changed.
            let bootstrap_root = self.bootstrap_root();
            let parent_tree = match parent {
                Some(parent) => Some(
                    self.repo
                        .find_commit(*parent)
                        .map_err(|e| object_error(format!("commit {parent}"), e))?
                        .tree_id()
                        .map_err(|e| object_error(format!("commit {parent}"), e))?
                        .detach(),
                ),
                None => None,
            };
            let paths = match in_force {
                InForce::Bootstrap if !explain => {
                    if self.policy_changed(parent_tree, tree)? {
                        vec![POLICY_PATH.to_owned()]
                    } else {
                        Vec::new()
                    }
                }
                _ => changed_paths(self.repo, parent_tree, Some(tree))?,
            };
            for path in paths {
                let requirement = match in_force.policy() {
                    Some(policy) => policy.requirement(&path),
                    None if path == POLICY_PATH => Requirement::Root(&bootstrap_root),
                    None => {
                        // Any trusted signer may change anything but the policy.
                        report.paths.push(PathReport {
                            path,
                            parent: *parent,
                            decision: Decision {
                                by: "allowed_signers (no policy yet)".into(),
                                counted: vec![signer.principal.clone()],
                                threshold: 1,
                                role: vec!["any key in allowed_signers".into()],
                            },
                        });
                        continue;
                    }
                };
                let mut decision = requirement.decide(&principals);
                if in_force.policy().is_none() {
                    decision.by = format!(
                        "the bootstrap root (allowed_signers, [trust] root_threshold = {})",
                        self.root_threshold
                    );
                }
                if !decision.allowed() && !explain {
                    let policy = match in_force {
                        InForce::Bootstrap => format!(
                            "the device's allowed_signers {} (no policy yet)",
                            self.bootstrap.origin().display()
                        ),
                        InForce::Policy { record, .. } => {
                            format!("{POLICY_PATH} of commit {}", record.commit)
                        }
                    };
                    let mut advice = format!("add approvals from the missing principals: `shoal-agent approve {commit}` by each of them, pushed as refs/tags/shoal-approve/{commit}/<name>");
                    if !report.ignored_approvals.is_empty() {
                        advice.push_str(&format!(
                            "; not counted: {}",
                            report.ignored_approvals.join("; ")
                        ));
                    }
                    return Err(ChainError::NotAllowed(Box::new(NotAllowed {
                        commit,
                        parent: parent.map_or("(none: a root commit)".into(), |p| p.to_string()),
                        signer: signer.principal.clone(),
                        path,
                        decision,
                        policy,
                        advice,
                    })));
                }
                report.paths.push(PathReport {
                    path,
                    parent: *parent,
                    decision,
                });
            }
        }
        Ok(report)
    }

    fn policy_changed(&self, old: Option<ObjectId>, new: ObjectId) -> Result<bool, ChainError> {
        let blob = |tree: Option<ObjectId>| -> Result<Option<ObjectId>, ChainError> {
            let Some(tree) = tree else { return Ok(None) };
            let tree = self
                .repo
                .find_tree(tree)
                .map_err(|e| object_error(format!("tree {tree}"), e))?;
            Ok(tree
                .lookup_entry_by_path(POLICY_PATH)
                .map_err(|e| object_error(format!("tree {}", tree.id), e))?
                .map(|e| e.object_id()))
        };
        Ok(blob(old)? != blob(Some(new))?)
    }

    /// The principals whose approval tags on `commit` verify under `signers`, and why the
    /// others do not count.
    fn approvers(
        &self,
        commit: ObjectId,
        signers: &AllowedSigners,
    ) -> (BTreeSet<String>, Vec<String>) {
        let mut approvers = BTreeSet::new();
        let mut ignored = Vec::new();
        for approval in self.approvals.get(&commit).into_iter().flatten() {
            let object = match self.repo.find_object(approval.tag) {
                Ok(object) => object,
                Err(e) => {
                    ignored.push(format!("{} is unreadable ({e})", approval.reference));
                    continue;
                }
            };
            if object.kind != gix::object::Kind::Tag {
                ignored.push(format!(
                    "{} is a lightweight tag, not a signed one (git tag -s)",
                    approval.reference
                ));
                continue;
            }
            match sshsig::check_tag(signers, &object.data) {
                Err(e) => ignored.push(format!("{}: {e}", approval.reference)),
                Ok(signer) => match tagged_commit(&object.data) {
                    Some(target) if target == commit => {
                        approvers.insert(signer.principal);
                    }
                    Some(target) => ignored.push(format!(
                        "{} tags commit {target}, not {commit}",
                        approval.reference
                    )),
                    None => ignored.push(format!("{} does not tag a commit", approval.reference)),
                },
            }
        }
        (approvers, ignored)
    }
}

/// The `object` of a tag whose `type` is `commit`.
fn tagged_commit(raw: &[u8]) -> Option<ObjectId> {
    let text = std::str::from_utf8(raw.split(|&b| b == b'\n').next()?).ok()?;
    let id = text.strip_prefix("object ")?;
    let second = raw.split(|&b| b == b'\n').nth(1)?;
    if second != b"type commit" {
        return None;
    }
    ObjectId::from_hex(id.as_bytes()).ok()
}

/// Every path (blobs, symlinks, submodules) that differs between two trees; `None` is the empty
/// tree. Descends only into subtrees that differ.
pub(crate) fn changed_paths(
    repo: &gix::Repository,
    old: Option<ObjectId>,
    new: Option<ObjectId>,
) -> Result<Vec<String>, ChainError> {
    let mut out = Vec::new();
    diff_trees(repo, old, new, "", &mut out)?;
    Ok(out)
}

type Entries = BTreeMap<Vec<u8>, (bool, ObjectId, u16)>;

fn entries(repo: &gix::Repository, tree: Option<ObjectId>) -> Result<Entries, ChainError> {
    let mut map = BTreeMap::new();
    let Some(tree) = tree else { return Ok(map) };
    let tree = repo
        .find_tree(tree)
        .map_err(|e| object_error(format!("tree {tree}"), e))?;
    let decoded = tree
        .decode()
        .map_err(|e| object_error(format!("tree {}", tree.id), e))?;
    for entry in decoded.entries {
        map.insert(
            entry.filename.to_vec(),
            (
                entry.mode.is_tree(),
                entry.oid.to_owned(),
                entry.mode.value(),
            ),
        );
    }
    Ok(map)
}

fn diff_trees(
    repo: &gix::Repository,
    old: Option<ObjectId>,
    new: Option<ObjectId>,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<(), ChainError> {
    if old == new {
        return Ok(());
    }
    let old = entries(repo, old)?;
    let new = entries(repo, new)?;
    let names: BTreeSet<&Vec<u8>> = old.keys().chain(new.keys()).collect();
    for name in names {
        let path = format!("{prefix}{}", String::from_utf8_lossy(name));
        let before = old.get(name);
        let after = new.get(name);
        if before == after {
            continue;
        }
        let tree_of = |e: Option<&(bool, ObjectId, u16)>| e.filter(|e| e.0).map(|e| e.1);
        let file_of = |e: Option<&(bool, ObjectId, u16)>| e.is_some_and(|e| !e.0);
        // A subtree on either side: recurse into what differs below it.
        if tree_of(before).is_some() || tree_of(after).is_some() {
            diff_trees(
                repo,
                tree_of(before),
                tree_of(after),
                &format!("{path}/"),
                out,
            )?;
        }
        if file_of(before) || file_of(after) {
            out.push(path);
        }
    }
    Ok(())
}
