//! The pack gauge against packs made by the real `git pack-objects` and packs built here by hand
//! (a lying header, a delta that would build a huge object, a zlib stream padded without end).

use shoal_testkit::ConfigRepo;

use super::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn limits(max_object: u64) -> Limits {
    Limits {
        max_fetch: ByteSize(u64::MAX),
        max_object: ByteSize(max_object),
    }
}

/// A git repository in a temp dir (the kit's `ConfigRepo`, isolated from the host's git config).
struct Repo {
    _dir: tempfile::TempDir,
    repo: ConfigRepo,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = ConfigRepo::init(dir.path());
        Repo { _dir: dir, repo }
    }

    fn git(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        self.repo.git_bytes(args, stdin)
    }

    fn commit(&self, files: &[(&str, Vec<u8>)]) {
        for (path, content) in files {
            self.repo.write(path, content);
        }
        self.repo.commit_unsigned("change");
    }

    /// The whole history as one pack, as `git-upload-pack` would send it.
    fn pack(&self, offset_deltas: bool) -> Vec<u8> {
        let mut args = vec!["pack-objects", "--stdout", "--revs", "-q"];
        if offset_deltas {
            args.push("--delta-base-offset");
        }
        self.git(&args, b"HEAD\n")
    }
}

/// Bytes that do not compress: a xorshift stream.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Feeds `pack` in chunks of `chunk` bytes; the verdict and how far the gauge read.
fn feed(gauge: &mut PackGauge, pack: &[u8], chunk: usize) -> (Result<(), Exceeded>, usize) {
    let mut offset = 0;
    for piece in pack.chunks(chunk) {
        if let Err(e) = gauge.feed(piece) {
            return (Err(e), offset);
        }
        offset += piece.len();
    }
    (Ok(()), offset)
}

#[test]
fn a_pack_git_makes_is_followed_to_its_end_however_it_is_cut() {
    let repo = Repo::new();
    // Similar versions of the same files, so that git stores most of them as deltas.
    let base = noise(40_000, 7);
    for round in 0..6u8 {
        let mut config = base.clone();
        config[round as usize * 1000] = round;
        repo.commit(&[
            ("config.bin", config),
            ("motd", format!("round {round}\n").into_bytes()),
            ("zeros", vec![0; 50_000 + usize::from(round)]),
        ]);
    }
    for offset_deltas in [false, true] {
        let pack = repo.pack(offset_deltas);
        std::fs::write(repo.repo.path().join("all.pack"), &pack).unwrap();
        repo.git(&["index-pack", "all.pack"], b"");
        let listing = repo.git(&["verify-pack", "-v", "all.idx"], b"");
        assert!(
            String::from_utf8_lossy(&listing).contains("chain length = 1"),
            "the pack holds deltas"
        );
        for chunk in [1, 3, 1000, 65_516, pack.len()] {
            let mut gauge = PackGauge::new(limits(64 * KIB), 20);
            let (verdict, _) = feed(&mut gauge, &pack, chunk);
            assert_eq!(
                verdict,
                Ok(()),
                "chunks of {chunk}, offset deltas: {offset_deltas}"
            );
            assert_eq!(gauge.stage, Stage::Done, "chunks of {chunk}");
        }
    }
}

#[test]
fn an_object_over_max_object_is_refused_at_its_header_before_its_data() {
    let repo = Repo::new();
    repo.commit(&[("big.bin", noise(300 * KIB as usize, 3))]);
    let pack = repo.pack(true);
    let mut gauge = PackGauge::new(limits(256 * KIB), 20);
    let (verdict, offset) = feed(&mut gauge, &pack, 512);
    assert_eq!(
        verdict,
        Err(Exceeded::Object {
            what: "a blob of",
            size: ByteSize(300 * KIB),
            limit: ByteSize(256 * KIB),
        })
    );
    assert!(
        offset < 4096,
        "refused after {offset} of {} bytes",
        pack.len()
    );
    assert_eq!(
        verdict.unwrap_err().to_string(),
        "the server sent a blob of 300 KiB (more than max_object = 256 KiB) before the \
         signature could be checked"
    );
}

#[test]
fn a_compression_bomb_is_refused_on_its_declared_size_not_its_wire_size() {
    let repo = Repo::new();
    repo.commit(&[("zeros", vec![0; 16 * MIB as usize])]);
    let pack = repo.pack(true);
    assert!(
        pack.len() < 100 * KIB as usize,
        "16 MiB of zeros are small on the wire"
    );
    let mut gauge = PackGauge::new(limits(MIB), 20);
    let (verdict, _) = feed(&mut gauge, &pack, pack.len());
    assert!(
        matches!(verdict, Err(Exceeded::Object { size: ByteSize(s), .. }) if s == 16 * MIB),
        "{verdict:?}"
    );
}

// ---- packs built by hand

/// A pack entry header: type and size, git's variable-length encoding.
fn entry_header(kind: u8, mut size: u64) -> Vec<u8> {
    let mut first = (kind << 4) | (size & 0x0f) as u8;
    size >>= 4;
    let mut out = Vec::new();
    while size > 0 {
        out.push(first | 0x80);
        first = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(first);
    out
}

fn delta_varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// A zlib stream of `data` in one stored block, preceded by `padding` empty stored blocks.
fn zlib_stored(data: &[u8], padding: usize) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    for _ in 0..padding {
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
    }
    let len = u16::try_from(data.len()).unwrap();
    out.push(0x01);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn pack_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut pack = b"PACK".to_vec();
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_be_bytes());
    for entry in entries {
        pack.extend_from_slice(entry);
    }
    pack.extend_from_slice(&[0; 20]);
    pack
}

fn blob_entry(data: &[u8], declared: u64) -> Vec<u8> {
    let mut entry = entry_header(3, declared);
    entry.extend(zlib_stored(data, 0));
    entry
}

#[test]
fn a_hand_made_pack_passes() {
    let pack = pack_of(&[blob_entry(b"hello\n", 6), blob_entry(b"", 0)]);
    let mut gauge = PackGauge::new(limits(KIB), 20);
    assert_eq!(feed(&mut gauge, &pack, 1).0, Ok(()));
    assert_eq!(gauge.stage, Stage::Done);
    // What follows the checksum is the byte cap's business.
    assert_eq!(gauge.feed(b"trailing"), Ok(()));
}

#[test]
fn a_small_delta_that_would_build_a_huge_object_is_refused() {
    // A reference delta: a 20-byte base id, then instructions that start with the base's size
    // and the result's: 10 bytes of base, 1 GiB of result (copy instructions could make it).
    let mut instructions = delta_varint(10);
    instructions.extend(delta_varint(1 << 30));
    instructions.extend_from_slice(&[0x90, 0xff]);
    let mut entry = entry_header(7, instructions.len() as u64);
    entry.extend_from_slice(&[0xab; 20]);
    entry.extend(zlib_stored(&instructions, 0));
    let pack = pack_of(&[entry]);
    let mut gauge = PackGauge::new(limits(MIB), 20);
    assert_eq!(
        feed(&mut gauge, &pack, 1).0,
        Err(Exceeded::Object {
            what: "a delta whose result is",
            size: ByteSize(1 << 30),
            limit: ByteSize(MIB),
        })
    );
}

#[test]
fn an_offset_delta_within_bounds_passes() {
    let mut instructions = delta_varint(6);
    instructions.extend(delta_varint(6));
    instructions.extend_from_slice(&[0x90, 0x06]);
    let mut delta = entry_header(6, instructions.len() as u64);
    delta.push(0x12); // the base: the blob before it, 18 bytes back
    delta.extend(zlib_stored(&instructions, 0));
    let pack = pack_of(&[blob_entry(b"hello\n", 6), delta]);
    let mut gauge = PackGauge::new(limits(KIB), 20);
    assert_eq!(feed(&mut gauge, &pack, 2).0, Ok(()));
    assert_eq!(gauge.stage, Stage::Done);
}

#[test]
fn a_stream_padded_without_end_is_stopped_by_its_compressed_size() {
    // An empty blob whose zlib stream carries empty blocks: it inflates to nothing, forever.
    let mut entry = entry_header(3, 0);
    entry.extend(zlib_stored(b"", 20_000));
    let pack = pack_of(&[entry]);
    let mut gauge = PackGauge::new(limits(KIB), 20);
    let (verdict, offset) = feed(&mut gauge, &pack, 4096);
    assert!(
        matches!(verdict, Err(Exceeded::Compressed { what: "a blob", .. })),
        "{verdict:?}"
    );
    assert!(offset < 80_000, "stopped after {offset} bytes");
}

#[test]
fn what_is_not_a_pack_or_lies_about_its_sizes_is_malformed() {
    let cases: [(Vec<u8>, &str); 5] = [
        (
            b"NACK\0\0\0\x02\0\0\0\x01".to_vec(),
            "it does not start with PACK",
        ),
        (
            {
                let mut pack = pack_of(&[]);
                pack[7] = 9;
                pack
            },
            "pack version 9",
        ),
        (
            pack_of(&[blob_entry(b"hello\n", 3)]),
            "a blob inflates to more than the 3 bytes its header declares",
        ),
        (
            pack_of(&[blob_entry(b"hi\n", 6)]),
            "a blob inflates to 3 bytes, its header declares 6",
        ),
        (pack_of(&[vec![0x50, 0x00]]), "an entry of unknown type 5"),
    ];
    for (pack, expected) in cases {
        let mut gauge = PackGauge::new(limits(KIB), 20);
        let verdict = feed(&mut gauge, &pack, pack.len()).0;
        assert_eq!(
            verdict,
            Err(Exceeded::Malformed(expected.into())),
            "{expected}"
        );
    }
}

#[test]
fn the_meter_stops_past_max_fetch_and_keeps_the_first_reason() {
    let meter = Meter::new(Limits {
        max_fetch: ByteSize(100),
        max_object: ByteSize(10),
    });
    assert!(meter.receive(60).is_ok());
    assert!(meter.receive(40).is_ok(), "exactly the cap is allowed");
    let error = meter.receive(1).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the server sent more than max_fetch = 100 bytes before the signature could be checked"
    );
    assert!(meter.check().is_err(), "stopped for good");
    meter.stop(Exceeded::Malformed("later".into()));
    assert_eq!(
        meter.verdict(),
        Some(Exceeded::Fetch {
            limit: ByteSize(100)
        })
    );
    assert_eq!(meter.received(), 101);
}
