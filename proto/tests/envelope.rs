//! Envelope promises: what `seal` makes, `open` gives back unchanged; any change to the signed
//! bytes, the key or the version is refused; nothing over the size limit is produced or accepted.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use shoal_proto::{
    EnvelopeError, KeyId, Report, ResourceError, SignedEnvelope, Status, MAX_ENVELOPE_BYTES,
    SIGNING_CONTEXT,
};

fn device_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn report() -> Report {
    let mut r = Report::new("gw-0042", Status::Failed, 17);
    r.labels.insert("site".into(), "berlin".into());
    r.agent_version = "0.1.0".into();
    r.generation = Some(3);
    r.commit = Some("89abcdef0123456789abcdef0123456789abcdef".into());
    r.errors.push(ResourceError {
        resource: "/etc/motd".into(),
        message: "permission denied".into(),
    });
    r.timings.fetch_ms = Some(12);
    r.sent_at = 1_760_000_000;
    r
}

fn reopen(env: &SignedEnvelope) -> Result<Report, EnvelopeError> {
    let env = SignedEnvelope::from_json(&env.to_json())?;
    let key = env.key_id()?.verifying_key()?;
    env.open(&key)
}

#[test]
fn seal_then_open_round_trips_over_the_wire() {
    let key = device_key(1);
    let env = SignedEnvelope::seal(&key, &report()).unwrap();
    assert_eq!(env.version, 1);
    assert_eq!(env.key_id, KeyId::of(&key.verifying_key()).to_string());
    assert_eq!(reopen(&env).unwrap(), report());
}

#[test]
fn signature_covers_context_and_payload_bytes() {
    use ed25519_dalek::{Signature, Verifier as _};
    let key = device_key(1);
    let env = SignedEnvelope::seal(&key, &report()).unwrap();
    let payload = STANDARD.decode(&env.payload).unwrap();
    assert_eq!(
        serde_json::from_slice::<Report>(&payload).unwrap(),
        report()
    );
    let sig = Signature::from_slice(&STANDARD.decode(&env.signature).unwrap()).unwrap();
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(&payload);
    key.verifying_key().verify(&msg, &sig).unwrap();
    assert!(key.verifying_key().verify(&payload, &sig).is_err());
}

#[test]
fn tampered_payload_is_a_bad_signature() {
    let key = device_key(1);
    let mut env = SignedEnvelope::seal(&key, &report()).unwrap();
    let mut forged = report();
    forged.status = Status::Converged;
    env.payload = STANDARD.encode(serde_json::to_vec(&forged).unwrap());
    assert!(matches!(
        reopen(&env),
        Err(EnvelopeError::BadSignature { .. })
    ));
}

#[test]
fn flipped_signature_bit_is_a_bad_signature() {
    let key = device_key(1);
    let mut env = SignedEnvelope::seal(&key, &report()).unwrap();
    let mut sig = STANDARD.decode(&env.signature).unwrap();
    sig[10] ^= 1;
    env.signature = STANDARD.encode(&sig);
    assert!(matches!(
        reopen(&env),
        Err(EnvelopeError::BadSignature { .. })
    ));
    env.signature = STANDARD.encode([0u8; 12]);
    assert!(matches!(
        reopen(&env),
        Err(EnvelopeError::BadSignature { .. })
    ));
}

#[test]
fn swapped_key_id_is_a_bad_signature() {
    let env = SignedEnvelope::seal(&device_key(1), &report()).unwrap();
    let mut swapped = env.clone();
    swapped.key_id = KeyId::of(&device_key(2).verifying_key()).to_string();
    assert!(matches!(
        reopen(&swapped),
        Err(EnvelopeError::BadSignature { .. })
    ));
    // Opening with a key other than the one the envelope names is refused before verifying.
    assert!(matches!(
        env.open(&device_key(2).verifying_key()),
        Err(EnvelopeError::KeyIdMismatch { .. })
    ));
}

#[test]
fn unsupported_version_is_named_even_when_fields_changed() {
    let v2 = br#"{"version":2,"whatever":"new layout"}"#;
    assert!(matches!(
        SignedEnvelope::from_json(v2),
        Err(EnvelopeError::UnsupportedVersion { version: 2 })
    ));
    let mut env = SignedEnvelope::seal(&device_key(1), &report()).unwrap();
    env.version = 0;
    assert!(matches!(
        reopen(&env),
        Err(EnvelopeError::UnsupportedVersion { version: 0 })
    ));
}

#[test]
fn unknown_envelope_fields_are_ignored() {
    let env = SignedEnvelope::seal(&device_key(1), &report()).unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
    value["added_later"] = serde_json::json!({"x": 1});
    let bytes = serde_json::to_vec(&value).unwrap();
    let decoded = SignedEnvelope::from_json(&bytes).unwrap();
    assert_eq!(decoded, env);
}

#[test]
fn malformed_inputs_are_malformed() {
    for bad in [
        &b"not json"[..],
        b"{}",
        br#"{"version":1}"#,
        br#"{"version":"1","key_id":"","payload":"","signature":""}"#,
    ] {
        assert!(
            matches!(
                SignedEnvelope::from_json(bad),
                Err(EnvelopeError::Malformed { .. })
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let mut env = SignedEnvelope::seal(&device_key(1), &report()).unwrap();
    env.payload = "%%%".into();
    assert!(matches!(reopen(&env), Err(EnvelopeError::Malformed { .. })));
}

#[test]
fn signed_garbage_is_a_malformed_report_and_signed_bad_id_is_invalid() {
    let key = device_key(1);
    let sign = |payload: &[u8]| {
        use ed25519_dalek::Signer as _;
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(payload);
        SignedEnvelope {
            version: 1,
            key_id: KeyId::of(&key.verifying_key()).to_string(),
            payload: STANDARD.encode(payload),
            signature: STANDARD.encode(key.sign(&msg).to_bytes()),
        }
    };
    assert!(matches!(
        reopen(&sign(br#"{"device_id":"gw-1"}"#)),
        Err(EnvelopeError::MalformedReport { .. })
    ));
    let mut r = report();
    r.device_id = "../etc".into();
    assert!(matches!(
        reopen(&sign(&serde_json::to_vec(&r).unwrap())),
        Err(EnvelopeError::InvalidReport(_))
    ));
}

#[test]
fn size_limit_applies_to_seal_and_decode() {
    let mut big = report();
    big.errors = (0..2000)
        .map(|i| ResourceError {
            resource: format!("/etc/file-{i}"),
            message: "x".repeat(40),
        })
        .collect();
    assert!(matches!(
        SignedEnvelope::seal(&device_key(1), &big),
        Err(EnvelopeError::TooLarge {
            limit: MAX_ENVELOPE_BYTES,
            ..
        })
    ));
    let oversized = vec![b' '; MAX_ENVELOPE_BYTES + 1];
    assert!(matches!(
        SignedEnvelope::from_json(&oversized),
        Err(EnvelopeError::TooLarge { size, .. }) if size == MAX_ENVELOPE_BYTES + 1
    ));
    // The largest report that seals still decodes.
    let mut fits = report();
    fits.errors.clear();
    let env = SignedEnvelope::seal(&device_key(1), &fits).unwrap();
    assert!(env.to_json().len() <= MAX_ENVELOPE_BYTES);
}

#[test]
fn fields_added_by_a_newer_agent_are_ignored_inside_the_signed_payload() {
    use ed25519_dalek::Signer as _;
    let key = device_key(3);
    let payload =
        br#"{"device_id":"gw-7","status":"held","sequence":1,"new_field":[1,2],"timings":{"new_ms":5}}"#;
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(payload);
    let env = SignedEnvelope {
        version: 1,
        key_id: KeyId::of(&key.verifying_key()).to_string(),
        payload: STANDARD.encode(payload),
        signature: STANDARD.encode(key.sign(&msg).to_bytes()),
    };
    assert_eq!(reopen(&env).unwrap(), Report::new("gw-7", Status::Held, 1));
}
