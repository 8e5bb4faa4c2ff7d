//! Batch signature checks (`ingest::verify_all`) give every envelope the verdict a one-by-one
//! strict check (`ingest::verify`) gives it — the same report or the same rejection — whatever
//! the batch's size and wherever its bad envelopes sit: tampered payloads, another key's
//! signature, a weak key's forgery, signed garbage.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use shoal_fleet::ingest::{self, Rejection};
use shoal_proto::{Report, SignedEnvelope, Status, SIGNING_CONTEXT};

fn key(seed: u64) -> SigningKey {
    let mut bytes = [7u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    SigningKey::from_bytes(&bytes)
}

fn good(i: u64) -> SignedEnvelope {
    let mut report = Report::new(format!("dev-{i}"), Status::ALL[i as usize % 7], i + 1);
    report.commit = Some(format!("{i:08x}"));
    SignedEnvelope::seal(&key(i), &report).unwrap()
}

/// Envelope `i` of a batch, bad in one of several ways when `kind` says so.
fn envelope(i: u64, kind: u64) -> Vec<u8> {
    let mut e = good(i);
    match kind {
        // A payload changed after signing.
        1 => {
            let mut payload = STANDARD.decode(&e.payload).unwrap();
            let last = payload.len() - 2;
            payload[last] ^= 1;
            e.payload = STANDARD.encode(payload);
        }
        // Signed by another key than the one it names.
        2 => e.signature = good(i + 1000).signature,
        // A weak key (the identity point) and the "signature" that satisfies the cofactorless
        // equation for it and any message: R = identity, s = 0. Strict checks refuse weak keys.
        3 => {
            let mut identity = [0u8; 32];
            identity[0] = 1;
            e.key_id = format!("ed25519:{}", STANDARD.encode(identity));
            let mut sig = [0u8; 64];
            sig[0] = 1;
            e.signature = STANDARD.encode(sig);
        }
        // A valid signature over a payload that is not a report.
        4 => {
            let k = key(i);
            let payload = b"{\"not\": \"a report\"}".to_vec();
            let mut msg = SIGNING_CONTEXT.to_vec();
            msg.extend_from_slice(&payload);
            use ed25519_dalek::Signer as _;
            e.payload = STANDARD.encode(payload);
            e.signature = STANDARD.encode(k.sign(&msg).to_bytes());
        }
        _ => {}
    }
    e.to_json()
}

type Verdict = Result<(String, Report), Rejection>;

fn one_by_one(bodies: &[Vec<u8>]) -> Vec<Verdict> {
    bodies
        .iter()
        .map(|b| ingest::verify(b).map(|v| (v.key_id.to_string(), v.report)))
        .collect()
}

fn batched(bodies: &[Vec<u8>]) -> Vec<Verdict> {
    let decoded: Vec<_> = bodies
        .iter()
        .map(|b| ingest::decode(b).expect("these envelopes decode"))
        .collect();
    ingest::verify_all(decoded)
        .into_iter()
        .map(|r| r.map(|v| (v.key_id.to_string(), v.report)))
        .collect()
}

#[test]
fn a_batch_gives_every_envelope_the_verdict_of_a_strict_check() {
    for size in [1u64, 3, 4, 5, 17, 64, 128] {
        // No bad envelope, one at each end and in the middle, every fifth, all of them.
        let patterns: Vec<Box<dyn Fn(u64) -> u64>> = vec![
            Box::new(|_| 0),
            Box::new(|i| u64::from(i == 0)),
            Box::new(move |i| if i == size - 1 { 2 } else { 0 }),
            Box::new(move |i| if i == size / 2 { 3 } else { 0 }),
            Box::new(|i| if i % 5 == 2 { 1 + i % 4 } else { 0 }),
            Box::new(|i| 1 + i % 4),
        ];
        for (p, pattern) in patterns.iter().enumerate() {
            let bodies: Vec<Vec<u8>> = (0..size).map(|i| envelope(i, pattern(i))).collect();
            let want = one_by_one(&bodies);
            assert_eq!(batched(&bodies), want, "batch of {size}, pattern {p}");
            let refused = want.iter().filter(|v| v.is_err()).count();
            let bad = (0..size).filter(|i| pattern(*i) != 0).count();
            assert_eq!(refused, bad, "batch of {size}, pattern {p}: {want:?}");
        }
    }
    // The kinds of refusal are the strict check's own.
    let codes: Vec<&str> = batched(&(1..=4).map(|k| envelope(k, k)).collect::<Vec<_>>())
        .into_iter()
        .map(|v| v.unwrap_err().reason_code())
        .collect();
    assert_eq!(
        codes,
        [
            "bad_signature",
            "bad_signature",
            "bad_signature",
            "malformed_report"
        ]
    );
}
