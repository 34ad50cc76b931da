//! Deterministic layer compression. A layer blob is its tar cut into blocks of
//! [`BLOCK_SIZE`] uncompressed bytes, each compressed on its own: a gzip member
//! per block for gzip, a zstd frame per block for zstd. Concatenated members
//! (RFC 1952) and frames (RFC 8878) are one stream to every reader, and the
//! bytes of a block depend only on the block's bytes, so the blocks can be
//! compressed on any number of threads and the blob is the same whatever
//! `--jobs` is.
//!
//! gzip: one backend (zlib-rs through flate2), one level, and a header with no
//! name, no mtime and OS 255. zstd: the bundled libzstd of one pinned `zstd`
//! crate, one level, no checksum, no content size, no dictionary id, one
//! thread per frame. Changing any of these changes layer digests: see
//! docs/reproducibility.md before touching it.

use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::{Compression as Level, GzBuilder};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

/// Level 1: a package's layer is compressed once and then shared by every app
/// and build, but a cold build pays for every layer. Level 1 made the cold
/// build about a fifth faster than level 6 (`scripts/bench.sh deps`, see
/// docs/benchmarks.md) for somewhat larger layers.
pub const GZIP_LEVEL: u32 = 1;

/// zstd's own default level: at about gzip level 1's speed it writes smaller
/// layers (figures in docs/configuration.md, `compression`).
pub const ZSTD_LEVEL: i32 = 3;

/// Uncompressed bytes per independently compressed block. Large enough that
/// the per-block cost (an 18-byte gzip header and trailer, a dictionary that
/// starts empty) is lost in the noise, small enough that a few blocks in flight
/// per thread keep memory flat.
pub const BLOCK_SIZE: usize = 1 << 20;

/// At most this many compression threads, whatever `--jobs` says, and no
/// more than the machine has cores.
const MAX_THREADS: usize = 8;

/// Held by the one layer whose blocks are compressed on threads; layers written
/// meanwhile (wheel layers are built side by side) compress their blocks on
/// their own thread. The bytes are the same either way, and blocks in flight
/// stay at one pool's worth, so a build's memory stays flat.
static POOL_TAKEN: AtomicBool = AtomicBool::new(false);

/// How a layer's tar is compressed (`compression` in the spec).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

impl Compression {
    pub fn parse(text: &str) -> Option<Compression> {
        match text {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => super::MEDIA_TYPE_OCI_LAYER_GZIP,
            Compression::Zstd => super::MEDIA_TYPE_OCI_LAYER_ZSTD,
        }
    }
}

pub fn gzip_writer<W: Write>(inner: W) -> GzEncoder<W> {
    GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(inner, Level::new(GZIP_LEVEL))
}

/// Bytes sampled from a block to decide whether deflate can shrink it.
const PROBE: usize = 64 << 10;

/// One block as one gzip member. A block whose first [`PROBE`] bytes deflate
/// does not shrink by at least 1/64 (random data, already compressed files) is
/// stored instead: deflate at level 1 gains nothing there and costs most of a
/// build's time for a big layer of such data. The test reads only the block,
/// so the choice is as deterministic as the compression.
fn gzip_block(block: &[u8]) -> io::Result<Vec<u8>> {
    gzip_block_into(block, Vec::with_capacity(deflate_bound(block.len())))
}

/// What `GzBuilder::new().mtime(0).operating_system(255)` writes before the
/// deflate stream at levels 0 and 1: no flags, no mtime, XFL 4 ("fastest"),
/// OS 255. Written by hand so the deflate state can be reused (see
/// [`deflated`]); a test holds it to flate2's own header.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

/// [`gzip_block`] into `out`: header, raw deflate, CRC-32 and size.
fn gzip_block_into<W: Write>(block: &[u8], mut out: W) -> io::Result<W> {
    let level = if block.len() >= 2 * PROBE && !shrinks(&block[..PROBE])? {
        Level::none()
    } else {
        Level::new(GZIP_LEVEL)
    };
    let mut crc = flate2::Crc::new();
    crc.update(block);
    out.write_all(&GZIP_HEADER)?;
    deflated(level, block, |body| out.write_all(body))?;
    out.write_all(&crc.sum().to_le_bytes())?;
    // ISIZE is the size modulo 2^32 (RFC 1952); a block is at most 1 MiB.
    out.write_all(&(block.len() as u32).to_le_bytes())?;
    Ok(out)
}

thread_local! {
    /// A raw deflate stream per level (stored, level 1), reset between
    /// members. A fresh one is a 380 KB allocation, above glibc's mmap
    /// threshold (src/main.rs), and a spliced layer starts a member at every
    /// gap between wheel files: a data app's cold build made 4,500 of them,
    /// 350,000 page faults and a second of system time.
    static DEFLATERS: std::cell::RefCell<[Option<DeflateEncoder<Vec<u8>>>; 2]> =
        const { std::cell::RefCell::new([None, None]) };
}

/// `data` deflated (raw, no zlib or gzip framing) at `level`, handed to
/// `use_body`: the same bytes as a new encoder, from this thread's reused one.
fn deflated(
    level: Level,
    data: &[u8],
    use_body: impl FnOnce(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let slot = usize::from(level.level() != 0);
    let body = DEFLATERS.with(|cell| -> io::Result<Vec<u8>> {
        let mut slots = cell.borrow_mut();
        let enc = slots[slot].get_or_insert_with(|| DeflateEncoder::new(Vec::new(), level));
        let written = enc.write_all(data).and_then(|()| enc.try_finish());
        // reset() ends the (finished) stream, hands back its output and
        // starts the next from a clean state, keeping the allocation.
        match written.and_then(|()| enc.reset(Vec::new())) {
            Ok(body) => Ok(body),
            Err(e) => {
                // A stream left half-written is never reused.
                slots[slot] = None;
                Err(e)
            }
        }
    })?;
    use_body(&body)
}

/// The most a member of `len` bytes can take: stored blocks (5 bytes per
/// 64 KiB), the gzip header and trailer, and some slack; so the output buffer
/// is allocated once.
fn deflate_bound(len: usize) -> usize {
    len + 5 * (len / 65_535 + 1) + 64
}

fn shrinks(sample: &[u8]) -> io::Result<bool> {
    let mut len = 0;
    deflated(Level::new(GZIP_LEVEL), sample, |body| {
        len = body.len();
        Ok(())
    })?;
    Ok(len < sample.len() - sample.len() / 64)
}

/// A new zstd context per frame. Unlike deflate's (see [`DEFLATERS`]),
/// keeping one per thread was measured to cost more than it saves: at level 3
/// a context holds megabytes of tables, one per build thread, for 30 % fewer
/// page faults (the numpy/pandas/scipy app: peak RSS 53 -> 67 MiB).
fn zstd_block(block: &[u8]) -> io::Result<Vec<u8>> {
    let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
    use zstd::zstd_safe::CParameter as P;
    c.set_parameter(P::ChecksumFlag(false))?;
    c.set_parameter(P::ContentSizeFlag(false))?;
    c.set_parameter(P::DictIdFlag(false))?;
    c.compress(block)
}

fn compress_block(compression: Compression, block: &[u8]) -> io::Result<Vec<u8>> {
    match compression {
        Compression::Gzip => gzip_block(block),
        Compression::Zstd => zstd_block(block),
    }
}

type Done = (u64, io::Result<Vec<u8>>);

/// Threads compressing blocks, started when a layer reaches its second block
/// and no other layer holds the pool.
struct Pool {
    work: Option<mpsc::SyncSender<(u64, Vec<u8>)>>,
    done: mpsc::Receiver<Done>,
    workers: Vec<thread::JoinHandle<()>>,
    /// Blocks handed out and not yet written.
    limit: u64,
}

impl Pool {
    fn try_start(compression: Compression, threads: usize) -> Option<Pool> {
        if POOL_TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        let (work, queue) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let (finished, done) = mpsc::channel::<Done>();
        let workers = (0..threads)
            .map(|_| {
                let queue = Arc::clone(&queue);
                let finished = finished.clone();
                thread::spawn(move || loop {
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((seq, block)) = job else { break };
                    let out = std::panic::catch_unwind(|| compress_block(compression, &block))
                        .unwrap_or_else(|_| Err(io::Error::other("compressing a block panicked")));
                    if finished.send((seq, out)).is_err() {
                        break;
                    }
                })
            })
            .collect();
        Some(Pool {
            work: Some(work),
            done,
            workers,
            // One block queued beyond those being compressed keeps every thread busy.
            limit: threads as u64 + 1,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.work = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        POOL_TAKEN.store(false, Ordering::Release);
    }
}

/// Compresses one block on this thread, straight into `out`.
fn write_block(compression: Compression, block: &[u8], out: &mut impl Write) -> io::Result<()> {
    match compression {
        Compression::Gzip => gzip_block_into(block, out).map(drop),
        Compression::Zstd => out.write_all(&zstd_block(block)?),
    }
}

/// A writer that compresses what it is given in blocks, on up to `jobs`
/// threads, and writes the compressed blocks to `inner` in order.
pub struct LayerEncoder<W: Write> {
    inner: W,
    compression: Compression,
    threads: usize,
    block: Vec<u8>,
    pool: Option<Pool>,
    /// Blocks submitted, and blocks written to `inner`.
    submitted: u64,
    written: u64,
    ready: BTreeMap<u64, Vec<u8>>,
    /// Bytes went to `inner` between blocks (see `end_block`).
    interleaved: bool,
}

impl<W: Write> LayerEncoder<W> {
    pub fn new(compression: Compression, jobs: usize, inner: W) -> Self {
        LayerEncoder {
            inner,
            compression,
            threads: jobs
                .min(thread::available_parallelism().map_or(1, |n| n.get()))
                .clamp(1, MAX_THREADS),
            block: Vec::new(),
            pool: None,
            submitted: 0,
            written: 0,
            ready: BTreeMap::new(),
            interleaved: false,
        }
    }

    /// Ends the block being filled here rather than at its full size, and
    /// returns the writer once every block before it is written, so that
    /// bytes made elsewhere (a spliced gzip member) can go between blocks.
    /// Where blocks end then depends on the caller's cuts, never on `jobs`.
    pub fn end_block(&mut self) -> io::Result<&mut W> {
        while self.written < self.submitted {
            self.wait_one()?;
        }
        if !self.block.is_empty() {
            // On this thread: a short block is quick, and the buffer is kept.
            self.submitted += 1;
            self.written += 1;
            write_block(self.compression, &self.block, &mut self.inner)?;
            self.block.clear();
        }
        self.interleaved = true;
        Ok(&mut self.inner)
    }

    /// Compresses the last block and returns `inner`. An empty input is one
    /// empty block, so the output is still a valid stream.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.block.is_empty() || (self.submitted == 0 && !self.interleaved) {
            self.submit()?;
        }
        while self.written < self.submitted {
            self.wait_one()?;
        }
        self.pool = None;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn submit(&mut self) -> io::Result<()> {
        let block = std::mem::take(&mut self.block);
        let seq = self.submitted;
        self.submitted += 1;
        if self.pool.is_none() && self.threads > 1 {
            self.pool = Pool::try_start(self.compression, self.threads);
        }
        let Some(limit) = self.pool.as_ref().map(|p| p.limit) else {
            // On this thread; every earlier block is written already.
            self.written += 1;
            return write_block(self.compression, &block, &mut self.inner);
        };
        while self.submitted - self.written > limit {
            self.wait_one()?;
        }
        let pool = self.pool.as_ref().expect("started above");
        pool.work
            .as_ref()
            .expect("open until finish")
            .send((seq, block))
            .map_err(|_| io::Error::other("the compression threads stopped"))?;
        // Write whatever is already done, without waiting.
        while let Ok((seq, out)) = pool.done.try_recv() {
            self.ready.insert(seq, out?);
        }
        self.write_ready()
    }

    /// Waits for one block to be compressed, then writes what is in order.
    fn wait_one(&mut self) -> io::Result<()> {
        if self.ready.contains_key(&self.written) {
            return self.write_ready();
        }
        let pool = self.pool.as_ref().expect("blocks in flight imply a pool");
        let (seq, out) = pool
            .done
            .recv()
            .map_err(|_| io::Error::other("the compression threads stopped"))?;
        self.ready.insert(seq, out?);
        self.write_ready()
    }

    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(out) = self.ready.remove(&self.written) {
            self.inner.write_all(&out)?;
            self.written += 1;
        }
        Ok(())
    }
}

impl<W: Write> Write for LayerEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.block.capacity() == 0 {
            // Small layers stay small; from the second block on, one allocation.
            let want = if self.submitted == 0 {
                buf.len().max(64 << 10)
            } else {
                BLOCK_SIZE
            };
            self.block.reserve_exact(want.min(BLOCK_SIZE));
        }
        let n = buf.len().min(BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK_SIZE {
            self.submit()?;
        }
        Ok(n)
    }

    /// Blocks are cut by size only: a flush must not end one early, or the
    /// bytes would depend on who flushes when.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("layer media type {0} is not supported (only gzip, zstd and uncompressed tar layers are)")]
pub struct UnsupportedCompression(pub String);

/// Whether a layer of this media type is compressed (gzip or zstd).
pub fn is_compressed(media_type: &str) -> bool {
    media_type.ends_with("gzip") || media_type.ends_with("+zstd")
}

/// The uncompressed tar stream of a layer blob, by its media type.
pub fn decompressed<'a>(
    media_type: &str,
    r: impl std::io::Read + 'a,
) -> Result<Box<dyn std::io::Read + 'a>, UnsupportedCompression> {
    if media_type.ends_with("gzip") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if media_type.ends_with("+zstd") {
        // Reads concatenated frames as one stream, as our own layers need.
        let d = zstd::stream::read::Decoder::new(r)
            .map_err(|_| UnsupportedCompression(media_type.to_string()))?;
        Ok(Box::new(d))
    } else if media_type.ends_with(".tar")
        || media_type == "application/vnd.docker.image.rootfs.diff.tar"
    {
        Ok(Box::new(r))
    } else {
        Err(UnsupportedCompression(media_type.to_string()))
    }
}

/// Reads a whole layer blob back into its tar (for tests and small blobs).
pub fn decompress_all(media_type: &str, blob: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    decompressed(media_type, blob)
        .map_err(io::Error::other)?
        .read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(compression: Compression, jobs: usize, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut w = LayerEncoder::new(compression, jobs, Vec::new());
        for c in data.chunks(chunk.max(1)) {
            w.write_all(c).unwrap();
            w.flush().unwrap();
        }
        w.finish().unwrap()
    }

    /// Deterministic bytes that compress somewhat, with a random stretch.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 300_000) % 3 == 2 {
                    x as u8
                } else {
                    b"def handler(request):\n    return 42\n"[i % 36]
                }
            })
            .collect()
    }

    /// A gzip member as flate2's GzBuilder writes it: what layer format 4's
    /// blocks were made with before the deflate state was reused.
    fn flate2_member(block: &[u8], level: Level) -> Vec<u8> {
        let mut w = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), level);
        w.write_all(block).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn reused_deflate_states_write_the_members_a_fresh_encoder_writes() {
        let mut x: u64 = 7;
        let random: Vec<u8> = (0..3 * PROBE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let text = sample(BLOCK_SIZE);
        let cases: [(&[u8], Level); 6] = [
            (b"", Level::new(GZIP_LEVEL)),
            (b"a tar header and some padding", Level::new(GZIP_LEVEL)),
            (&text, Level::new(GZIP_LEVEL)),
            (&text[..100_000], Level::new(GZIP_LEVEL)),
            (&random, Level::none()),
            (&random[..1000], Level::new(GZIP_LEVEL)),
        ];
        // Twice round, so every member after the first comes from a reused state.
        for round in 0..2 {
            for (block, level) in cases {
                assert_eq!(
                    gzip_block(block).unwrap(),
                    flate2_member(block, level),
                    "round {round}, {} bytes",
                    block.len()
                );
            }
        }
    }

    #[test]
    fn header_carries_nothing_variable() {
        let mut w = gzip_writer(Vec::new());
        w.write_all(b"hello").unwrap();
        let out = w.finish().unwrap();
        // magic, CM=8, FLG=0, MTIME=0, XFL, OS=255
        assert_eq!(&out[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_eq!(out[9], 255);
    }

    #[test]
    fn the_bytes_are_the_same_whatever_jobs_and_write_sizes_are() {
        let data = sample(5 * BLOCK_SIZE + 12_345);
        for compression in [Compression::Gzip, Compression::Zstd] {
            let one = encode(compression, 1, &data, 8192);
            for (jobs, chunk) in [(4, 8192), (2, 1), (4, 3 * BLOCK_SIZE), (16, 100_000)] {
                if chunk == 1 && data.len() > BLOCK_SIZE {
                    // Byte-at-a-time only over the first blocks, to stay quick.
                    let head = &data[..BLOCK_SIZE + 10];
                    assert_eq!(
                        encode(compression, 1, head, 4096),
                        encode(compression, jobs, head, 1)
                    );
                    continue;
                }
                assert_eq!(
                    one,
                    encode(compression, jobs, &data, chunk),
                    "{compression:?} jobs={jobs} chunk={chunk}"
                );
            }
        }
    }

    #[test]
    fn every_reader_sees_one_stream_with_the_input() {
        let data = sample(3 * BLOCK_SIZE + 7);
        for compression in [Compression::Gzip, Compression::Zstd] {
            let blob = encode(compression, 4, &data, 65536);
            let back = decompress_all(compression.media_type(), &blob).unwrap();
            assert!(back == data, "{compression:?} round trip");
        }
        // An empty input is still a valid, empty stream.
        for compression in [Compression::Gzip, Compression::Zstd] {
            let blob = encode(compression, 2, b"", 1);
            assert!(!blob.is_empty());
            assert!(decompress_all(compression.media_type(), &blob)
                .unwrap()
                .is_empty());
        }
    }

    #[test]
    fn a_layer_of_one_block_is_one_plain_gzip_member() {
        // Small layers keep the bytes of a single-stream writer.
        let data = sample(200_000);
        let mut w = gzip_writer(Vec::new());
        w.write_all(&data).unwrap();
        assert_eq!(
            encode(Compression::Gzip, 4, &data, 4096),
            w.finish().unwrap()
        );
    }

    #[test]
    fn incompressible_blocks_are_stored_and_text_is_compressed() {
        let mut random = vec![0u8; BLOCK_SIZE];
        let mut x: u32 = 1;
        for b in random.iter_mut() {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (x >> 24) as u8;
        }
        let stored = gzip_block(&random).unwrap();
        // Stored deflate: 5 bytes per 64 KiB block, plus header and trailer.
        assert!(stored.len() < random.len() + 200, "{}", stored.len());
        assert_eq!(decompress_all("+gzip", &stored).unwrap(), random);
        let text = sample(BLOCK_SIZE / 4);
        assert!(gzip_block(&text).unwrap().len() < text.len() / 4);
    }

    #[test]
    fn zstd_frames_carry_no_checksum_or_size() {
        let frame = zstd_block(b"hello hello hello").unwrap();
        assert_eq!(&frame[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        // Frame header descriptor: no content size (bits 6-7 and 5 single
        // segment off), no checksum (bit 2), no dictionary id (bits 0-1).
        assert_eq!(frame[4] & 0b1110_0111, 0);
    }

    #[test]
    fn compression_names_parse_and_map_to_media_types() {
        assert_eq!(Compression::parse("zstd"), Some(Compression::Zstd));
        assert_eq!(Compression::parse("gzip"), Some(Compression::Gzip));
        assert_eq!(Compression::parse("xz"), None);
        assert!(Compression::Zstd.media_type().ends_with("tar+zstd"));
        assert!(decompressed("application/vnd.oci.image.layer.v1.tar+xz", &b""[..]).is_err());
    }
}
