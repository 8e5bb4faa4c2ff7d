//! `--verify-bench`: what one report's signature check costs on this machine, one by one as the
//! collector does it (`verify_strict`) and in batches (`ed25519_dalek::verify_batch`), so the
//! gain batch verification could bring to ingest is a measured number. Measures; decides nothing.

use std::time::Instant;

use ed25519_dalek::{Signature, Signer as _, VerifyingKey};
use shoal_proto::{Report, Status};

use crate::client::device_key;

/// Prints microseconds per signature for each way, over `n` signed reports.
pub fn run(n: usize) -> anyhow::Result<()> {
    let signed: Vec<(VerifyingKey, Vec<u8>, Signature)> = (0..n)
        .map(|i| {
            let key = device_key(i);
            let mut r = Report::new(format!("load-{i:07}"), Status::Converged, 1);
            r.commit = Some(format!("{:040x}", i));
            let mut msg = b"shoal-report-v1\0".to_vec();
            msg.extend(serde_json::to_vec(&r).expect("a report encodes"));
            let sig = key.sign(&msg);
            (key.verifying_key(), msg, sig)
        })
        .collect();
    let t = Instant::now();
    for (key, msg, sig) in &signed {
        key.verify_strict(msg, sig)?;
    }
    let single = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("signature check, one by one (verify_strict): {single:.1} µs per report");
    for batch in [8, 32, 64, 256] {
        let t = Instant::now();
        for chunk in signed.chunks(batch) {
            let msgs: Vec<&[u8]> = chunk.iter().map(|(_, m, _)| m.as_slice()).collect();
            let sigs: Vec<Signature> = chunk.iter().map(|(_, _, s)| *s).collect();
            let keys: Vec<VerifyingKey> = chunk.iter().map(|(k, _, _)| *k).collect();
            ed25519_dalek::verify_batch(&msgs, &sigs, &keys)?;
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "signature check, batches of {batch} (verify_batch): {per:.1} µs per report ({:.0} % of one by one)",
            100.0 * per / single
        );
    }
    Ok(())
}
