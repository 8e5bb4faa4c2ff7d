//! What one fetch may receive before the signature is checked: at most `max_fetch` bytes from the
//! server, and no object larger than `max_object`. Enforced on the transport itself, below gix,
//! so it holds whatever the server sends and over every transport gix speaks (https, http,
//! git://, file and local paths through `git-upload-pack`, ssh). Decides nothing about trust.
//!
//! Where the bytes flow (gix 0.90): every transport is a `Box<dyn Transport>`; the ref
//! advertisement is read from the reader `Transport::handshake` returns, and each negotiation
//! round's reply and the pack from the reader of `Transport::request` (gix-transport
//! `client/blocking_io/traits.rs:40` and `:51`). [`Metered`] wraps the transport and hands gix
//! counting readers instead: the byte count covers the ref advertisement, the negotiation
//! replies, the pack and the server's progress messages (the 4-byte packet-line headers aside).
//! Past the cap a read fails, gix gives up the fetch, and the verdict stays in the [`Meter`].
//!
//! Why the transport and not gix's `receive` progress tree (the "read pack" counter of
//! gix-pack `bundle/write/mod.rs:76`) or its interrupt flag: the progress tree sees only the pack,
//! not the advertisement before it; an interrupt flag is polled between reads, so the cut comes
//! late and looks like a user's interrupt; a read that fails is the earliest point, and it
//! depends on no progress id or naming inside gix.
//!
//! The byte cap alone does not bound memory: gix holds each pack entry's compressed bytes whole
//! while it reads the pack (gix-pack `data/input/bytes_to_entries.rs:100-113`), and inflates each
//! object whole to hash it when it builds the index (`cache/delta/traverse/resolve.rs:627`), a
//! delta's base, instructions and result at once. A 256 MiB blob of zeros is 256 KiB on the wire.
//! So [`PackGauge`] follows the pack as it streams by (the entry headers and each entry's zlib
//! stream, inflated into a small scratch buffer and thrown away) and stops it at the first object
//! declared larger than `max_object`, a delta whose result would be, or an entry whose compressed
//! bytes run past what such an object could take. What neither bound changes: gix maps the whole
//! received pack to index it (`bundle/write/mod.rs:396`), so a complete pack counts in RSS up to
//! its size in clean file pages (docs/SECURITY.md, "Fetch").

use std::any::Any;
use std::borrow::Cow;
use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gix::bstr::BStr;
use gix::protocol::transport::client::blocking_io::{
    ExtendedBufRead, HandleProgress, ReadlineBufRead, RequestWriter, SetServiceResponse, Transport,
};
use gix::protocol::transport::client::{self, MessageKind, TransportWithoutIO, WriteMode};
use gix::protocol::transport::packetline::PacketLineRef;
use gix::protocol::transport::{Protocol, Service};

use crate::config::ByteSize;

/// The bounds of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_fetch: ByteSize,
    pub max_object: ByteSize,
}

impl Limits {
    /// What an entry's compressed bytes may reach: an object of `max_object` bytes stored without
    /// compression (zlib's stored blocks add 5 bytes per 64 KiB), with room for an encoder that
    /// does worse than zlib on incompressible data, but not for padding without end (a zlib
    /// stream can carry empty blocks forever and inflate to nothing).
    fn max_compressed(&self) -> u64 {
        let max = self.max_object.bytes();
        max.saturating_add(max / 8).saturating_add(64 * 1024)
    }
}

/// Why a fetch was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error("the server sent more than max_fetch = {limit} before the signature could be checked")]
    Fetch { limit: ByteSize },
    #[error("the server sent {what} {size} (more than max_object = {limit}) before the signature could be checked")]
    Object {
        what: &'static str,
        size: ByteSize,
        limit: ByteSize,
    },
    #[error("the server sent {what} whose compressed bytes alone passed {compressed} (max_object = {limit}) before the signature could be checked")]
    Compressed {
        what: &'static str,
        compressed: ByteSize,
        limit: ByteSize,
    },
    #[error("the server sent a malformed pack ({0})")]
    Malformed(String),
}

impl Exceeded {
    /// What the operator can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            Exceeded::Fetch { .. } => {
                "if the repository really needs more in one fetch, raise [source] max_fetch in the agent config"
            }
            Exceeded::Object { .. } | Exceeded::Compressed { .. } => {
                "if the repository really holds a file this large, raise [source] max_object in the agent config"
            }
            Exceeded::Malformed(_) => "check the git server",
        }
    }
}

/// The running count of one fetch and, once it was stopped, why. Shared by the transport and
/// the readers it hands out, and read by the caller after gix returns.
#[derive(Clone)]
pub struct Meter(Arc<Shared>);

struct Shared {
    limits: Limits,
    received: AtomicU64,
    /// The pack's objects as the gauge follows it: the count in its header (high 32 bits) and
    /// the entries read whole (low 32 bits), in one word so a reader sees a consistent pair;
    /// 0 before a pack header arrived.
    objects: AtomicU64,
    verdict: Mutex<Option<Exceeded>>,
}

impl Meter {
    pub fn new(limits: Limits) -> Self {
        Meter(Arc::new(Shared {
            limits,
            received: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            verdict: Mutex::new(None),
        }))
    }

    /// Why the fetch was stopped, if it was.
    pub fn verdict(&self) -> Option<Exceeded> {
        self.lock().clone()
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.0.received.load(Ordering::Relaxed)
    }

    /// The pack's objects read whole so far and its object count, once its header arrived
    /// (for the progress line; nothing decides on it).
    pub fn objects(&self) -> Option<(u32, u32)> {
        let word = self.0.objects.load(Ordering::Relaxed);
        let total = (word >> 32) as u32;
        (word != 0).then_some((word as u32, total))
    }

    fn set_objects(&self, (done, total): (u32, u32)) {
        let word = (u64::from(total) << 32) | u64::from(done);
        self.0.objects.store(word, Ordering::Relaxed);
    }

    fn limits(&self) -> Limits {
        self.0.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Exceeded>> {
        // A panic while holding this lock cannot leave the Option half-written.
        self.0.verdict.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `n` more bytes from the server; an error once past `max_fetch` or after any stop.
    fn receive(&self, n: usize) -> io::Result<()> {
        let total = self
            .0
            .received
            .fetch_add(n as u64, Ordering::Relaxed)
            .saturating_add(n as u64);
        if total > self.0.limits.max_fetch.bytes() {
            return Err(self.stop(Exceeded::Fetch {
                limit: self.0.limits.max_fetch,
            }));
        }
        self.check()
    }

    /// An error if the fetch was stopped.
    fn check(&self) -> io::Result<()> {
        match &*self.lock() {
            Some(verdict) => Err(io::Error::other(verdict.to_string())),
            None => Ok(()),
        }
    }

    /// Records why the fetch stops (the first reason wins) and returns the error that stops it.
    fn stop(&self, why: Exceeded) -> io::Error {
        let mut verdict = self.lock();
        let first = verdict.get_or_insert(why);
        io::Error::other(first.to_string())
    }
}

/// A transport whose every reply is counted against a [`Meter`], and whose packs are followed
/// by a [`PackGauge`].
pub struct Metered<T> {
    inner: T,
    meter: Meter,
    hash_len: usize,
}

impl<T> Metered<T> {
    pub fn new(inner: T, meter: Meter, hash: gix::hash::Kind) -> Self {
        Metered {
            inner,
            meter,
            hash_len: hash.len_in_bytes(),
        }
    }
}

impl<T: TransportWithoutIO> TransportWithoutIO for Metered<T> {
    fn set_identity(&mut self, identity: client::Account) -> Result<(), client::Error> {
        self.inner.set_identity(identity)
    }

    fn to_url(&self) -> Cow<'_, BStr> {
        self.inner.to_url()
    }

    fn supported_protocol_versions(&self) -> &[Protocol] {
        self.inner.supported_protocol_versions()
    }

    fn connection_persists_across_multiple_requests(&self) -> bool {
        self.inner.connection_persists_across_multiple_requests()
    }

    fn configure(&mut self, config: &dyn Any) -> gix::error::Result {
        self.inner.configure(config)
    }
}

impl<T: Transport> Transport for Metered<T> {
    fn handshake<'a>(
        &mut self,
        service: Service,
        extra_parameters: &'a [(&'a str, Option<&'a str>)],
    ) -> Result<SetServiceResponse<'_>, client::Error> {
        let meter = self.meter.clone();
        let mut response = self.inner.handshake(service, extra_parameters)?;
        response.refs = response.refs.map(|refs| {
            Box::new(MeteredLines { inner: refs, meter }) as Box<dyn ReadlineBufRead + '_>
        });
        Ok(response)
    }

    fn request(
        &mut self,
        write_mode: WriteMode,
        on_into_read: MessageKind,
        trace: bool,
    ) -> Result<RequestWriter<'_>, client::Error> {
        let meter = self.meter.clone();
        let gauge = PackGauge::new(meter.limits(), self.hash_len);
        let (writer, reader) = self
            .inner
            .request(write_mode, on_into_read, trace)?
            .into_parts();
        // `into_parts` hands back the raw writer; this re-wraps it exactly as the inner transport
        // did (packet lines in `write_mode`, `on_into_read` sent when turned into the reader).
        let reader = Box::new(MeteredReader {
            inner: reader,
            meter,
            gauge,
        });
        Ok(RequestWriter::new_from_bufread(
            writer,
            reader,
            write_mode,
            on_into_read,
            trace,
        ))
    }
}

/// The ref advertisement, counted.
struct MeteredLines<'a> {
    inner: Box<dyn ReadlineBufRead + 'a>,
    meter: Meter,
}

impl Read for MeteredLines<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.meter.check()?;
        let n = self.inner.read(buf)?;
        self.meter.receive(n)?;
        Ok(n)
    }
}

impl BufRead for MeteredLines<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.meter.check()?;
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        // The error, if any, surfaces at the next read: `consume` cannot fail.
        let _ = self.meter.receive(amt);
        self.inner.consume(amt);
    }
}

impl ReadlineBufRead for MeteredLines<'_> {
    fn readline(&mut self) -> Line<'_> {
        if let Err(e) = self.meter.check() {
            return Some(Err(e));
        }
        let meter = self.meter.clone();
        let line = self.inner.readline();
        count_line(&meter, line)
    }

    fn readline_str(&mut self, line: &mut String) -> io::Result<usize> {
        self.meter.check()?;
        let n = self.inner.readline_str(line)?;
        self.meter.receive(n)?;
        Ok(n)
    }
}

/// What `readline` returns: a packet line, or why there is none.
type Line<'l> = Option<io::Result<gix::error::Result<PacketLineRef<'l>>>>;

/// Counts a packet line's payload; a line past the cap becomes the error that stops the fetch.
fn count_line<'l>(meter: &Meter, line: Line<'l>) -> Line<'l> {
    if let Some(Ok(Ok(PacketLineRef::Data(data)))) = &line {
        if let Err(e) = meter.receive(data.len()) {
            return Some(Err(e));
        }
    }
    line
}

/// A reply to a request: negotiation lines (read as lines) and then the pack (read as bytes),
/// counted; the pack's bytes also go through the [`PackGauge`].
struct MeteredReader<'a> {
    inner: Box<dyn ExtendedBufRead<'a> + Unpin + 'a>,
    meter: Meter,
    gauge: PackGauge,
}

impl MeteredReader<'_> {
    fn pack_bytes(meter: &Meter, gauge: &mut PackGauge, bytes: &[u8]) -> io::Result<()> {
        meter.receive(bytes.len())?;
        let fed = gauge.feed(bytes).map_err(|why| meter.stop(why));
        if let Some(objects) = gauge.objects() {
            meter.set_objects(objects);
        }
        fed
    }
}

impl Read for MeteredReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.meter.check()?;
        let n = self.inner.read(buf)?;
        Self::pack_bytes(&self.meter, &mut self.gauge, &buf[..n])?;
        Ok(n)
    }
}

impl BufRead for MeteredReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.meter.check()?;
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        // The bytes consumed are the front of what `fill_buf` returned, still buffered; the
        // error, if any, surfaces at the next read (`consume` cannot fail).
        if let Ok(buf) = self.inner.fill_buf() {
            let consumed = &buf[..amt.min(buf.len())];
            let _ = Self::pack_bytes(&self.meter, &mut self.gauge, consumed);
        }
        self.inner.consume(amt);
    }
}

impl ReadlineBufRead for MeteredReader<'_> {
    fn readline(&mut self) -> Line<'_> {
        if let Err(e) = self.meter.check() {
            return Some(Err(e));
        }
        let meter = self.meter.clone();
        count_line(&meter, self.inner.readline())
    }

    fn readline_str(&mut self, line: &mut String) -> io::Result<usize> {
        self.meter.check()?;
        let n = self.inner.readline_str(line)?;
        self.meter.receive(n)?;
        Ok(n)
    }
}

impl<'a> ExtendedBufRead<'a> for MeteredReader<'a> {
    fn set_progress_handler(&mut self, handle_progress: Option<HandleProgress<'a>>) {
        // The server's progress messages count too: a server could otherwise talk forever.
        let meter = self.meter.clone();
        let counted = handle_progress.map(|mut handle| -> HandleProgress<'a> {
            Box::new(move |is_err: bool, text: &[u8]| {
                if meter.receive(text.len()).is_err() {
                    return std::ops::ControlFlow::Break(());
                }
                handle(is_err, text)
            })
        });
        self.inner.set_progress_handler(counted);
    }

    fn peek_data_line(&mut self) -> Option<io::Result<Result<&[u8], client::Error>>> {
        // Counted when it is read.
        if let Err(e) = self.meter.check() {
            return Some(Err(e));
        }
        self.inner.peek_data_line()
    }

    fn reset(&mut self, version: Protocol) {
        self.inner.reset(version);
    }

    fn stopped_at(&self) -> Option<MessageKind> {
        self.inner.stopped_at()
    }
}

/// Scratch space the gauge inflates into and throws away.
const SCRATCH: usize = 32 * 1024;

/// Follows a pack as it streams by (git's pack format: a 12-byte header, entries of a header,
/// an optional delta base and a zlib stream, a trailing checksum) and stops it at the first
/// entry over the [`Limits`]. Keeps nothing of the objects: the window of the inflater and a
/// 32 KiB scratch buffer are its whole memory.
pub struct PackGauge {
    limits: Limits,
    hash_len: usize,
    stage: Stage,
    /// The pack header as it arrives.
    header: [u8; 12],
    header_len: usize,
    /// The object count of the pack's header, once read.
    objects: Option<u32>,
    objects_left: u32,
    entry: Entry,
    inflate: Option<Box<gix::zlib::Decompress>>,
    scratch: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    /// The entry's type and size (a variable-length integer), `shift` bits read so far.
    EntryHeader {
        shift: u32,
    },
    /// An offset delta's base offset: a variable-length integer, `read` bytes of it so far.
    OffsetBase {
        read: u8,
    },
    /// A reference delta's base object id, `left` bytes to go.
    ReferenceBase {
        left: usize,
    },
    Body,
    Trailer {
        left: usize,
    },
    Done,
}

#[derive(Debug, Default)]
struct Entry {
    kind: u8,
    declared: u64,
    compressed: u64,
    inflated: u64,
    /// A delta's first inflated bytes: its base size and result size.
    delta_header: [u8; 20],
    delta_header_len: usize,
    delta_checked: bool,
}

/// An object of `kind` whose size follows, in a message.
fn sized_name(kind: u8) -> &'static str {
    match kind {
        1 => "a commit of",
        2 => "a tree of",
        3 => "a blob of",
        4 => "a tag of",
        _ => "a delta of",
    }
}

const OFS_DELTA: u8 = 6;
const REF_DELTA: u8 = 7;

fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "a commit",
        2 => "a tree",
        3 => "a blob",
        4 => "a tag",
        _ => "a delta",
    }
}

impl PackGauge {
    pub fn new(limits: Limits, hash_len: usize) -> Self {
        PackGauge {
            limits,
            hash_len,
            stage: Stage::Header,
            header: [0; 12],
            header_len: 0,
            objects: None,
            objects_left: 0,
            entry: Entry::default(),
            inflate: None,
            scratch: Vec::new(),
        }
    }

    /// The entries read whole and the pack's object count, once its header was read.
    pub fn objects(&self) -> Option<(u32, u32)> {
        self.objects.map(|total| (total - self.objects_left, total))
    }

    /// Follows the next `data` of the pack; an error at the first entry over the limits, or at
    /// anything that is not a pack. Bytes after the pack's checksum are left to the byte cap.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Exceeded> {
        while !data.is_empty() {
            data = match self.stage {
                Stage::Header => self.header(data)?,
                Stage::EntryHeader { shift } => self.entry_header(data, shift)?,
                Stage::OffsetBase { read } => {
                    let byte = data[0];
                    if read >= 10 {
                        return Err(malformed("a delta's base offset does not end"));
                    }
                    if byte & 0x80 == 0 {
                        self.start_body();
                    } else {
                        self.stage = Stage::OffsetBase { read: read + 1 };
                    }
                    &data[1..]
                }
                Stage::ReferenceBase { left } => {
                    let taken = left.min(data.len());
                    if taken == left {
                        self.start_body();
                    } else {
                        self.stage = Stage::ReferenceBase { left: left - taken };
                    }
                    &data[taken..]
                }
                Stage::Body => self.body(data)?,
                Stage::Trailer { left } => {
                    let taken = left.min(data.len());
                    self.stage = if taken == left {
                        Stage::Done
                    } else {
                        Stage::Trailer { left: left - taken }
                    };
                    &data[taken..]
                }
                Stage::Done => return Ok(()),
            };
        }
        Ok(())
    }

    fn header<'d>(&mut self, data: &'d [u8]) -> Result<&'d [u8], Exceeded> {
        let taken = (12 - self.header_len).min(data.len());
        self.header[self.header_len..self.header_len + taken].copy_from_slice(&data[..taken]);
        self.header_len += taken;
        if self.header_len == 12 {
            let h = &self.header;
            if &h[..4] != b"PACK" {
                return Err(malformed("it does not start with PACK"));
            }
            let version = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            if version != 2 && version != 3 {
                return Err(malformed(&format!("pack version {version}")));
            }
            self.objects_left = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            self.objects = Some(self.objects_left);
            self.next_entry();
        }
        Ok(&data[taken..])
    }

    fn next_entry(&mut self) {
        self.stage = if self.objects_left == 0 {
            Stage::Trailer {
                left: self.hash_len,
            }
        } else {
            Stage::EntryHeader { shift: 0 }
        };
    }

    fn entry_header<'d>(&mut self, data: &'d [u8], shift: u32) -> Result<&'d [u8], Exceeded> {
        let byte = data[0];
        if shift == 0 {
            let kind = (byte >> 4) & 7;
            if kind == 0 || kind == 5 {
                return Err(malformed(&format!("an entry of unknown type {kind}")));
            }
            self.entry = Entry {
                kind,
                declared: u64::from(byte & 0x0f),
                ..Entry::default()
            };
            if byte & 0x80 == 0 {
                self.entry_declared()?;
            } else {
                self.stage = Stage::EntryHeader { shift: 4 };
            }
        } else {
            if shift > 57 {
                return Err(malformed("an entry's size does not fit 64 bits"));
            }
            self.entry.declared |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                self.entry_declared()?;
            } else {
                self.stage = Stage::EntryHeader { shift: shift + 7 };
            }
        }
        Ok(&data[1..])
    }

    /// The entry's header is complete: its declared size is known before any of its data.
    fn entry_declared(&mut self) -> Result<(), Exceeded> {
        let kind = self.entry.kind;
        if self.entry.declared > self.limits.max_object.bytes() {
            let what = if kind >= OFS_DELTA {
                "a delta whose instructions are"
            } else {
                sized_name(kind)
            };
            return Err(Exceeded::Object {
                what,
                size: ByteSize(self.entry.declared),
                limit: self.limits.max_object,
            });
        }
        match kind {
            OFS_DELTA => self.stage = Stage::OffsetBase { read: 0 },
            REF_DELTA => {
                self.stage = Stage::ReferenceBase {
                    left: self.hash_len,
                }
            }
            _ => self.start_body(),
        }
        Ok(())
    }

    fn start_body(&mut self) {
        match self.inflate.as_mut() {
            Some(inflate) => inflate.reset(),
            None => self.inflate = Some(Box::default()),
        }
        if self.scratch.is_empty() {
            self.scratch = vec![0; SCRATCH];
        }
        self.stage = Stage::Body;
    }

    fn body<'d>(&mut self, mut data: &'d [u8]) -> Result<&'d [u8], Exceeded> {
        let PackGauge {
            limits,
            inflate,
            scratch,
            entry,
            ..
        } = self;
        let Some(inflate) = inflate.as_mut() else {
            return Err(malformed("an entry's data before its header"));
        };
        let what = kind_name(entry.kind);
        while !data.is_empty() {
            let (in_before, out_before) = (inflate.total_in(), inflate.total_out());
            let status = inflate
                .decompress(data, scratch, gix::zlib::FlushDecompress::None)
                .map_err(|e| malformed(&format!("{what} does not inflate: {e}")))?;
            let consumed = usize::try_from(inflate.total_in() - in_before)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let produced = usize::try_from(inflate.total_out() - out_before)
                .unwrap_or(usize::MAX)
                .min(scratch.len());
            data = &data[consumed..];
            entry.compressed += consumed as u64;
            entry.inflated += produced as u64;
            let ended = status == gix::zlib::Status::StreamEnd;
            if entry.kind >= OFS_DELTA && !entry.delta_checked {
                entry.check_delta_header(&scratch[..produced], ended, limits.max_object)?;
            }
            if entry.inflated > entry.declared {
                return Err(malformed(&format!(
                    "{what} inflates to more than the {} bytes its header declares",
                    entry.declared
                )));
            }
            if entry.compressed > limits.max_compressed() {
                return Err(Exceeded::Compressed {
                    what,
                    compressed: ByteSize(limits.max_compressed()),
                    limit: limits.max_object,
                });
            }
            if ended {
                if entry.inflated != entry.declared {
                    return Err(malformed(&format!(
                        "{what} inflates to {} bytes, its header declares {}",
                        entry.inflated, entry.declared
                    )));
                }
                self.objects_left -= 1;
                self.next_entry();
                return Ok(data);
            }
            if consumed == 0 && produced == 0 {
                // zlib takes input whenever it has room for output: no progress with both
                // means a stream it cannot continue.
                return Err(malformed(&format!("{what} stops inflating")));
            }
        }
        Ok(data)
    }
}

impl Entry {
    /// A delta's inflated data starts with the size of its base and the size of the object it
    /// makes, each a variable-length integer: the result is refused before it is ever built.
    /// `produced` is the next inflated output; `ended` says the entry's stream is complete.
    fn check_delta_header(
        &mut self,
        produced: &[u8],
        ended: bool,
        limit: ByteSize,
    ) -> Result<(), Exceeded> {
        let start = self.delta_header_len;
        let taken = (self.delta_header.len() - start).min(produced.len());
        self.delta_header[start..start + taken].copy_from_slice(&produced[..taken]);
        self.delta_header_len += taken;
        let head = &self.delta_header[..self.delta_header_len];
        let sizes = varint(head)
            .and_then(|(base, used)| varint(&head[used..]).map(|(result, _)| (base, result)));
        let Some((base, result)) = sizes else {
            if ended || self.delta_header_len == self.delta_header.len() {
                return Err(malformed("a delta without a valid header"));
            }
            return Ok(());
        };
        for (what, size) in [
            ("a delta whose base is", base),
            ("a delta whose result is", result),
        ] {
            if size > limit.bytes() {
                return Err(Exceeded::Object {
                    what,
                    size: ByteSize(size),
                    limit,
                });
            }
        }
        self.delta_checked = true;
        Ok(())
    }
}

/// A delta header's variable-length integer (7 bits per byte, least significant first): the
/// value and the bytes it took, or `None` if `bytes` ends first or it overflows 64 bits.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn malformed(what: &str) -> Exceeded {
    Exceeded::Malformed(what.to_owned())
}

#[cfg(test)]
mod tests;
