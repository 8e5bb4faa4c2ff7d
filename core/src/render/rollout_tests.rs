//! `[rollout]` scenarios: a manifest's waves go in; every device's wave for a commit, or the
//! operator-facing error quoted in full, comes out.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// A repository whose `shoal.toml` has one file for everyone and `rollout` after it.
fn repo(rollout: &str) -> MemTree {
    MemTree(format!(
        "version = 1\n\n[[profile]]\nname = \"base\"\nmatch = \"*\"\n  [[profile.file]]\n  path = \"/etc/motd\"\n  source = \"files/motd\"\n\n{rollout}"
    ))
}

struct MemTree(String);

impl RepoTree for MemTree {
    fn read_file(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        match path {
            MANIFEST => Ok(self.0.clone().into_bytes()),
            "files/motd" => Ok(b"hello\n".to_vec()),
            _ => Err(TreeError::NotFound),
        }
    }
}

fn device(id: &str, labels: &[(&str, &str)]) -> DeviceIdentity {
    DeviceIdentity::new(id, labels.iter().copied(), "/var/lib/shoal")
}

fn rollout(text: &str) -> Rollout {
    render(&repo(text), &device("any", &[]))
        .unwrap_or_else(|e| panic!("{e}"))
        .rollout
        .expect("a rollout")
}

fn error(text: &str) -> String {
    match render(&repo(text), &device("any", &[])) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const COMMIT: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

const DESIGN_EXAMPLE: &str = r#"[rollout]
waves = [ { name = "canary", match = { labels = { ring = "canary" } } },
          { name = "early",  percent = 10,  after = "1h" },
          { name = "all",    percent = 100, after = "6h" } ]
"#;

#[test]
fn the_design_example_parses_into_ordered_waves() {
    let r = rollout(DESIGN_EXAMPLE);
    let names: Vec<&str> = r.waves.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["canary", "early", "all"]);
    assert_eq!(r.waves[0].after, Duration::ZERO);
    assert_eq!(r.waves[1].selects, WaveSelect::Percent(10));
    assert_eq!(r.waves[2].after, Duration::from_secs(6 * 3600));
    assert_eq!(
        serde_json::to_value(&r.waves[0]).unwrap(),
        serde_json::json!({"name": "canary", "match": {"where": {"labels": {"ring": "canary"}}}, "after_seconds": 0})
    );
    // Without `[rollout]`: none, every device at once.
    let plain = render(&repo(""), &device("any", &[])).unwrap();
    assert_eq!(plain.rollout, None);
}

#[test]
fn a_match_wave_takes_its_devices_whatever_their_bucket() {
    let r = rollout(DESIGN_EXAMPLE);
    for i in 0..50 {
        let id = format!("canary-{i}");
        let wave = r.wave_for(&device(&id, &[("ring", "canary")]), COMMIT);
        assert_eq!((wave.index, wave.name.as_str()), (0, "canary"), "{id}");
        assert_eq!(wave.bucket, bucket(&id, COMMIT));
    }
}

#[test]
fn percentages_are_cumulative_over_a_stable_bucket() {
    let r = rollout(DESIGN_EXAMPLE);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..10_000 {
        let id = format!("dev-{i:05}");
        let wave = r.wave_for(&device(&id, &[]), COMMIT);
        // The rule, stated: early holds buckets 0..10, all the rest.
        let expected = if wave.bucket < 10 { "early" } else { "all" };
        assert_eq!(wave.name, expected, "{id} bucket {}", wave.bucket);
        // Stable: the same device and commit, the same wave.
        assert_eq!(r.wave_for(&device(&id, &[]), COMMIT), wave);
        *counts.entry(wave.name).or_default() += 1;
    }
    // About 10 % in early: the bucket spreads devices evenly (binomial, σ ≈ 30).
    let early = counts["early"];
    assert!((850..=1150).contains(&early), "{counts:?}");
}

#[test]
fn the_bucket_is_sha256_of_device_and_commit_mod_100_and_moves_with_the_commit() {
    // Computed independently with Python: int.from_bytes(hashlib.sha256((device +
    // COMMIT).encode()).digest()[:8], "big") % 100. (4b825dc6... is git's empty tree id, used
    // here as any 40-hex id.)
    assert_eq!(bucket("gw-0042", COMMIT), 3);
    assert_eq!(bucket("sensor-1", COMMIT), 33);
    assert_eq!(bucket("dev-00000", COMMIT), 96);
    assert_eq!(bucket("gw-0042", &COMMIT.to_uppercase()), 3);
    // Over many commits, one device lands in many buckets: not always first, not always last.
    let buckets: std::collections::BTreeSet<u8> = (0..200)
        .map(|i| bucket("gw-0042", &format!("{i:040x}")))
        .collect();
    assert!(buckets.len() > 50, "{buckets:?}");
}

#[test]
fn bad_rollouts_are_refused_with_the_wave_and_the_cure() {
    let cases: &[(&str, &str)] = &[
        (
            "[rollout]\nwaves = [ { name = \"early\", percent = 10 }, { name = \"more\", percent = 60, after = \"1h\" } ]\n",
            "shoal.toml: [rollout]: the waves reach 60 % of the fleet, not 100 %: the other devices would be in no wave; end with a wave of percent = 100",
        ),
        (
            "[rollout]\nwaves = [ { name = \"canary\", match = { labels = { ring = \"canary\" } } } ]\n",
            "shoal.toml: [rollout]: every wave selects by `match`, so a device none matches would be in no wave; end with a wave of percent = 100",
        ),
        (
            "[rollout]\nwaves = []\n",
            "shoal.toml: [rollout]: has no waves; list them, e.g. waves = [{ name = \"all\", percent = 100 }], or remove [rollout]",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", percent = 10 }, { name = \"a\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #2 \"a\": name is already used by wave #1; wave names must be unique",
        ),
        (
            "[rollout]\nwaves = [ { name = \"\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #1: name must not be empty",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", percent = 50 }, { name = \"b\", percent = 50 }, { name = \"c\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #2 \"b\": percent 50 does not grow from wave #1 \"a\" (50); percentages are cumulative: each wave's is the share of the fleet reached once it opens",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", percent = 0 }, { name = \"b\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #1 \"a\": percent 0 is out of range; write a whole number from 1 to 100",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", percent = 150 } ]\n",
            "shoal.toml: [rollout] wave #1 \"a\": percent 150 is out of range; write a whole number from 1 to 100",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", percent = \"10%\" }, { name = \"b\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #1 \"a\": percent must be a whole number from 1 to 100, not \"10%\"",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", percent = 10, after = \"-1h\" }, { name = \"b\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #1 \"a\": after: invalid duration \"-1h\": expected a number and a unit, like \"30s\"",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", percent = 10, after = \"1 hour\" }, { name = \"b\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #1 \"a\": after: invalid duration \"1 hour\": unit must be one of ms, s, m, h, d",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", percent = 10, after = \"1000d\" }, { name = \"b\", percent = 100, after = \"1000d\" } ]\n",
            "shoal.toml: [rollout] wave #1 \"a\": after \"1000d\" is longer than the longest a wave may wait, 90 days",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", percent = 10, after = \"6h\" }, { name = \"b\", percent = 100, after = \"1h\" } ]\n",
            "shoal.toml: [rollout] wave #2 \"b\": after \"1h\" opens before wave #1 \"a\" (after 21600s); waves open in the order they are listed",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", match = { devices = [\"gw-1\"] }, percent = 10 }, { name = \"b\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #1 \"a\": has both `match` and `percent`; a wave selects devices by one of them",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\" }, { name = \"b\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #1 \"a\": needs `match = { labels = {...} }` (or `devices = [...]`) or `percent = N`",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", match = \"*\" }, { name = \"b\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #1 \"a\": match = \"*\" would put every device in this wave; for \"everyone else\" write percent = 100",
        ),
        (
            "[rollout]\nwaves = [ { name = \"a\", match = { labels = {} } }, { name = \"b\", percent = 100 } ]\n",
            "shoal.toml: [rollout] wave #1 \"a\": match.labels is empty; write match = \"*\" to select every device",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(&error(text), expected, "for:\n{text}");
    }
    // Misspelt keys are shape errors with their line, like everywhere in shoal.toml.
    let misspelt = error("[rollout]\nwaves = [ { name = \"a\", percentage = 100 } ]\n");
    assert!(
        misspelt.starts_with("shoal.toml:11:") && misspelt.contains("unknown field `percentage`"),
        "{misspelt}"
    );
}
