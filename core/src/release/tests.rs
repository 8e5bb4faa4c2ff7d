//! The release rules as data: tag texts in, a parsed release or the refusal out.

use super::*;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TAG: &str = "89abcdef0123456789abcdef0123456789abcdef";
/// 2024-05-01T12:00:00Z
const EXPIRES: i64 = 1_714_564_800;
const TAGGED: i64 = 1_714_000_000;

fn tag_text(name: &str, kind: &str, message: &str) -> String {
    format!(
        "object {COMMIT}\ntype {kind}\ntag {name}\ntagger Release Bot <bot@example.com> {TAGGED} +0000\n\n{message}-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n"
    )
}

fn release(name: &str) -> ReleaseTag {
    parse_tag(tag_text(name, "commit", "Release\n\nExpires: 2024-05-01T12:00:00Z\n").as_bytes())
        .unwrap()
}

fn context<'a>(last: Option<&'a LastRelease>, now: i64) -> Context<'a> {
    Context {
        environment: "production",
        last,
        applied: None,
        now,
    }
}

fn last(number: u64, tag: &str, tagger_time: i64) -> LastRelease {
    LastRelease {
        name: ReleaseName {
            environment: "production".into(),
            number,
        },
        tag: tag.into(),
        tagger_time,
    }
}

#[test]
fn a_release_tag_parses_into_its_environment_number_and_trailers() {
    let text = tag_text(
        "production/42",
        "commit",
        "Release production/42\n\nSigned-off-by: A <a@example.com>\nexpires: 2024-05-01T12:00:00Z\nHalt: true\n",
    );
    let tag = parse_tag(text.as_bytes()).unwrap();
    assert_eq!(
        tag,
        ReleaseTag {
            object: COMMIT.into(),
            object_type: "commit".into(),
            name: ReleaseName {
                environment: "production".into(),
                number: 42
            },
            tagger_time: TAGGED,
            expires: EXPIRES,
            halt: true,
        }
    );
    assert_eq!(tag.name.to_string(), "production/42");
}

#[test]
fn malformed_release_tags_are_named() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "production",
            "commit",
            "x\n\nExpires: 2024-05-01T12:00:00Z\n",
            "the tag is named \"production\", not `<environment>/<N>`",
        ),
        (
            "production/042",
            "commit",
            "x\n\nExpires: 2024-05-01T12:00:00Z\n",
            "the tag is named \"production/042\"",
        ),
        (
            "production/0",
            "commit",
            "x\n\nExpires: 2024-05-01T12:00:00Z\n",
            "the tag is named \"production/0\"",
        ),
        (
            "-prod/1",
            "commit",
            "x\n\nExpires: 2024-05-01T12:00:00Z\n",
            "the tag is named \"-prod/1\"",
        ),
        (
            "production/1",
            "commit",
            "no trailers\n",
            "has no `Expires: <time>` trailer",
        ),
        // A trailer is in the last paragraph only.
        (
            "production/1",
            "commit",
            "Expires: 2024-05-01T12:00:00Z\n\nlast words\n",
            "has no `Expires: <time>` trailer",
        ),
        (
            "production/1",
            "commit",
            "x\n\nExpires: 2024-05-01\n",
            "\"2024-05-01\" is not an RFC 3339 UTC time",
        ),
        (
            "production/1",
            "commit",
            "x\n\nExpires: 2024-05-01T12:00:00+02:00\n",
            "is not an RFC 3339 UTC time",
        ),
        (
            "production/1",
            "commit",
            "x\n\nExpires: 2024-02-30T12:00:00Z\n",
            "is not an RFC 3339 UTC time",
        ),
        (
            "production/1",
            "commit",
            "x\n\nExpires: 2024-05-01T12:00:00Z\nExpires: 2025-05-01T12:00:00Z\n",
            "more than one `Expires:` trailer",
        ),
        (
            "production/1",
            "commit",
            "x\n\nExpires: 2024-05-01T12:00:00Z\nHalt: maybe\n",
            "`Halt:` trailer \"maybe\"",
        ),
    ];
    for (name, kind, message, expected) in cases {
        let err = parse_tag(tag_text(name, kind, message).as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{name} {message:?}: {err}"
        );
    }
    let no_tagger = format!(
        "object {COMMIT}\ntype commit\ntag production/1\n\nx\n\nExpires: 2024-05-01T12:00:00Z\n"
    );
    assert_eq!(
        parse_tag(no_tagger.as_bytes()).unwrap_err(),
        ReleaseError::Malformed {
            problem: "it has no tagger"
        }
    );
}

#[test]
fn rfc3339_round_trips_and_ages_read_well() {
    assert_eq!(parse_rfc3339_utc("2024-05-01T12:00:00Z"), Some(EXPIRES));
    assert_eq!(format_rfc3339_utc(EXPIRES), "2024-05-01T12:00:00Z");
    assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_rfc3339_utc("2024-05-01t12:00:00z"), None);
    assert_eq!(format_days(7_500), "less than a day");
    assert_eq!(format_days(86_400 + 5), "1 day");
    assert_eq!(format_days(3 * 86_400 + 4 * 3600 + 59), "3 days");
}

#[test]
fn environment_names_are_kept_to_what_a_ref_and_a_tag_name_can_hold() {
    for good in ["production", "eu-west.2", "a_b"] {
        check_environment_name(good).unwrap();
    }
    for bad in [
        "",
        ".hidden",
        "-x",
        "a/b",
        "a..b",
        "x.lock",
        "caf\u{e9}",
        &"x".repeat(65),
    ] {
        assert!(check_environment_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_release_rules_in_order() {
    let now = EXPIRES - 60;
    let tag = release("production/42");
    // First release on this device, fresh.
    assert_eq!(decide(&tag, TAG, context(None, now)), Ok(()));
    // The same release seen again: accepted (a no-op sync).
    let same = last(42, TAG, TAGGED);
    assert_eq!(decide(&tag, TAG, context(Some(&same), now)), Ok(()));
    // N grows.
    let older = last(41, "aa", TAGGED - 10);
    assert_eq!(decide(&tag, TAG, context(Some(&older), now)), Ok(()));

    let staging = release("staging/43");
    assert_eq!(
        decide(&staging, TAG, context(None, now)).unwrap_err().to_string(),
        "the release is staging/43, for environment `staging`, but this device follows `production`: a release for another environment is never applied here (ask why the server offers it)"
    );
    let newer = last(43, "bb", TAGGED);
    assert_eq!(
        decide(&tag, TAG, context(Some(&newer), now)).unwrap_err().to_string(),
        "release production/42 is older than production/43, the last release this device accepted (anti-rollback); to go back, release a revert commit as a new number"
    );
    let other_tag = last(42, "cc", TAGGED);
    assert!(matches!(
        decide(&tag, TAG, context(Some(&other_tag), now)),
        Err(Refusal::Reused { .. })
    ));
    let later = last(41, "dd", TAGGED + 1);
    assert_eq!(
        decide(&tag, TAG, context(Some(&later), now)).unwrap_err().to_string(),
        "release production/42 was tagged at 2024-04-24T23:06:40Z, before 2024-04-24T23:06:41Z when production/41 was tagged: the tagger time never goes backwards (anti-rollback); make a new release"
    );
    let expired = decide(&tag, TAG, context(None, EXPIRES + 7_500)).unwrap_err();
    assert!(expired.is_stale());
    assert_eq!(
        expired.to_string(),
        "release production/42 expired at 2024-05-01T12:00:00Z (less than a day ago by this device's clock); the device stays at what it applied: the release bot has stopped re-signing or the server is serving an old release (a freeze); make a fresh release (`shoal-agent release`), and check the device's clock if it is wrong"
    );
    // Expiry is the least grave: a foreign, expired release is refused as foreign.
    assert!(matches!(
        decide(&staging, TAG, context(None, EXPIRES + 1)),
        Err(Refusal::ForeignEnvironment { .. })
    ));
    // The release of another environment than the last one's starts its own count.
    let staging_last = LastRelease {
        name: ReleaseName {
            environment: "staging".into(),
            number: 99,
        },
        tag: "ee".into(),
        tagger_time: TAGGED + 99,
    };
    assert_eq!(decide(&tag, TAG, context(Some(&staging_last), now)), Ok(()));
}

#[test]
fn a_release_of_a_tree_or_a_halted_one_is_not_applied() {
    let now = EXPIRES - 60;
    let tree = parse_tag(
        tag_text(
            "production/1",
            "tree",
            "x\n\nExpires: 2024-05-01T12:00:00Z\n",
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        decide(&tree, TAG, context(None, now)).unwrap_err().to_string(),
        "release production/1 points at a tree, not a commit; make releases of commits with `shoal-agent release`"
    );
    let halted = parse_tag(
        tag_text(
            "production/1",
            "commit",
            "x\n\nExpires: 2024-05-01T12:00:00Z\nHalt: true\n",
        )
        .as_bytes(),
    )
    .unwrap();
    assert!(matches!(
        decide(&halted, TAG, context(None, now)),
        Err(Refusal::Halted { .. })
    ));
    // A device already at the halted release's commit keeps it (and its freshness).
    let at_commit = Context {
        applied: Some(COMMIT),
        ..context(None, now)
    };
    assert_eq!(decide(&halted, TAG, at_commit), Ok(()));
}

#[test]
fn the_message_release_writes_parses_back() {
    let name = ReleaseName {
        environment: "production".into(),
        number: 7,
    };
    let message = tag_message(&name, COMMIT, EXPIRES, false);
    let tag = parse_tag(tag_text("production/7", "commit", &message).as_bytes()).unwrap();
    assert_eq!((tag.expires, tag.halt), (EXPIRES, false));
    let halted = tag_message(&name, COMMIT, EXPIRES, true);
    assert!(
        parse_tag(tag_text("production/7", "commit", &halted).as_bytes())
            .unwrap()
            .halt
    );
}
