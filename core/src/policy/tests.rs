//! Policy parsing and decisions as data: a valid policy, then one bad file per parse error with
//! the exact message.

use super::*;

const ALICE: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICmaNQlOdb5aK6sM2Tl0fBSX/n66ejaF87kwtaz6E20V";
const BOB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC+qk2RRl1l3ATuY78oAbZaJxVAIegW/5CINTewX8Wjl";
const CAROL: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBMZpa+JVLwsNYw7FA8e+n1kqWEbHSsF0gBciUalMAlK";
const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDV1dlivFpD/mX3Ano2LLOKR5RkEqz8G+H5nEKMVU4+pN1AKeBg3eitu919J6jjsrGDTnVTkX6czaNqlBHDPauE8x3C63ehy5QU7TuL3XMTNe9hVrO6/qZ3LLVn/Brv783zP0IAp1pTSmFJL+Qr1btOLJCRc4HaOhkx+iwATb4piQ==";
const ORIGIN: &str = ".shoal/policy.toml at commit 4f3c";

fn policy_text() -> String {
    format!(
        r#"version = 1
[principals]
alice = "{ALICE} alice@laptop"
bob = ["{BOB}"]
carol = "{CAROL}"
[root]
principals = ["alice", "bob", "carol"]
threshold = 2
[[environment]]
name = "production"
release = ["carol"]
max_age = "72h"
[[rule]]
name = "sensor team"
paths = ["profiles/sensor/**", "files/sensor/**"]
principals = ["bob", "alice"]
threshold = 1
[[rule]]
name = "units"
paths = ["units/*.service"]
principals = ["alice", "bob"]
threshold = 2
"#
    )
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_valid_policy_parses_and_decides_by_first_matching_rule() {
    let policy = Policy::parse(&policy_text(), ORIGIN).unwrap();
    assert_eq!(policy.principals().len(), 3);
    assert_eq!(policy.root().threshold, 2);
    let production = policy.environment("production").unwrap();
    assert_eq!(production.release, names(&["carol"]));
    assert_eq!(production.max_age, Some(Duration::from_secs(72 * 3600)));
    let bob_key = PublicKey::from_openssh(BOB).unwrap();
    assert_eq!(policy.principal_of(bob_key.key_data()), Some("bob"));

    let sensor = policy.requirement("files/sensor/x.conf");
    assert!(matches!(sensor, Requirement::Rule(r) if r.name == "sensor team"));
    assert!(sensor.decide(&names(&["bob"])).allowed());
    let carol_alone = sensor.decide(&names(&["carol"]));
    assert!(!carol_alone.allowed());
    assert_eq!(
        carol_alone.to_string(),
        "rule \"sensor team\" needs 1 of [alice, bob], has 0 (none of them)"
    );

    let unit = policy
        .requirement("units/a.service")
        .decide(&names(&["alice"]));
    assert_eq!(
        unit.to_string(),
        "rule \"units\" needs 2 of [alice, bob], has 1 (alice)"
    );
    assert!(policy
        .requirement("units/a.service")
        .decide(&names(&["alice", "bob", "carol"]))
        .allowed());

    // No rule matches, and the policy itself: the root.
    for path in ["shoal.toml", POLICY_PATH] {
        let root = policy.requirement(path).decide(&names(&["alice"]));
        assert_eq!(
            root.to_string(),
            "root needs 2 of [alice, bob, carol], has 1 (alice)"
        );
    }
    assert!(policy
        .allowed_signers_text()
        .contains(&format!("bob namespaces=\"git\" {BOB}\n")));
}

#[test]
fn each_parse_error_names_the_line_and_what_to_do() {
    let good = policy_text();
    let cases: Vec<(String, String)> = vec![
        (
            good.replace("threshold = 2\n[[environment]]", "threshold = 2\ntreshold = 1\n[[environment]]"),
            format!("{ORIGIN}:9: unknown field `treshold`, expected `principals` or `threshold`"),
        ),
        (
            good.replace("carol = \"", "bob = \""),
            format!("{ORIGIN}:5: duplicate key `bob` in table `principals` (TOML syntax)"),
        ),
        (
            good.replace("principals = [\"bob\", \"alice\"]", "principals = [\"bob\", \"mallory\"]"),
            format!("{ORIGIN}:16: rule \"sensor team\" names `mallory`, which is not in [principals]; add it there or fix the name"),
        ),
        (
            good.replace("principals = [\"alice\", \"bob\", \"carol\"]", "principals = [\"alice\", \"alice\"]"),
            format!("{ORIGIN}:7: [root] names `alice` twice; a principal counts once, list it once"),
        ),
        (
            good.replace("threshold = 2\n[[environment]]", "threshold = 4\n[[environment]]"),
            format!("{ORIGIN}:8: [root] has threshold 4 but only 3 principal(s), so nothing could ever be approved; lower the threshold or add principals"),
        ),
        (
            good.replace("threshold = 1\n", "threshold = 0\n"),
            format!("{ORIGIN}:17: rule \"sensor team\" has threshold 0, which would let anyone (even an unsigned commit's author) through; use at least 1"),
        ),
        (
            good.replace("\"files/sensor/**\"", "\"files/[sensor/**\""),
            format!("{ORIGIN}:15: rule \"sensor team\": invalid path pattern `files/[sensor/**`: `[` in `[sensor` is not closed; close the class with `]`"),
        ),
        (
            good.replace("\"units/*.service\"", "\"/units/*.service\""),
            format!("{ORIGIN}:20: rule \"units\": invalid path pattern `/units/*.service`: patterns are repository paths, relative to its root; remove the leading `/`"),
        ),
        (
            good.replace("name = \"units\"", "name = \"sensor team\""),
            format!("{ORIGIN}:19: a second [[rule]] named `sensor team`; names must be unique"),
        ),
        (
            good.replace(&format!("bob = [\"{BOB}\"]"), &format!("bob = \"{ALICE}\"")),
            format!("{ORIGIN}:4: the key of principal `bob` is also `alice`'s; a key belongs to one principal, so that its signature counts for one"),
        ),
        (
            good.replace(&format!("carol = \"{CAROL}\""), &format!("carol = \"{RSA}\"")),
            format!("{ORIGIN}:5: principal `carol` has a `ssh-rsa` key; only ssh-ed25519 keys are trusted (ssh-keygen -t ed25519)"),
        ),
        (
            good.replace(&format!("carol = \"{CAROL}\""), "carol = \"ssh-ed25519 AAAA\""),
            format!("{ORIGIN}:5: the key of principal `carol` cannot be read (Base64 encoding error: invalid Base64 length); paste the whole line of the signer's .pub file"),
        ),
        (
            good.replace(&format!("bob = [\"{BOB}\"]"), "bob = []"),
            format!("{ORIGIN}:4: principal `bob` has no key; give it at least one ssh-ed25519 key, or remove it"),
        ),
        (
            good.replace("version = 1", "version = 2"),
            format!("{ORIGIN}:1: policy version 2 is not supported by this agent (it reads version 1); upgrade the agent before the policy"),
        ),
        (
            good.replace("version = 1\n", ""),
            format!("{ORIGIN}: `version` is missing; the first line of a policy is `version = 1`"),
        ),
        (
            good.replace("max_age = \"72h\"", "max_age = \"3 days\""),
            format!("{ORIGIN}:12: environment \"production\": max_age invalid duration \"3 days\": unit must be one of ms, s, m, h, d"),
        ),
        (
            good.replace("release = [\"carol\"]", "release = []"),
            format!("{ORIGIN}:9: environment \"production\" names no principal; list at least one"),
        ),
        (
            good.replace("paths = [\"units/*.service\"]", "paths = []"),
            format!("{ORIGIN}:20: rule \"units\" has no paths; list the globs it governs, e.g. paths = [\"profiles/sensor/**\"]"),
        ),
        (
            good.replace("[root]\nprincipals = [\"alice\", \"bob\", \"carol\"]\nthreshold = 2\n", ""),
            format!("{ORIGIN}:1: missing field `root`"),
        ),
    ];
    for (text, expected) in cases {
        assert_ne!(text, good, "the case did not change the policy: {expected}");
        let error = match Policy::parse(&text, ORIGIN) {
            Ok(_) => panic!("accepted, expected {expected:?}:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(error, expected, "policy:\n{text}");
    }
}
